"""Service subcommands: gateway, worker, aggregator, migrate, create-admin. Each imports its
process's modules inside the command, so a process loads only its own floor."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from classpulse.settings import Settings, get_settings, keyless_settings

log = logging.getLogger("classpulse")

# The signing key's variable: only the gateway signs and verifies tokens, so only its
# environment carries it (`classpulse run` starts the other processes without it).
SIGNING_KEY_ENV = "CLASSPULSE_SECRET_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="the FastAPI gateway alone")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_gateway)
    for name, help_, func in (
        ("worker", "one inference worker", cmd_worker),
        ("aggregator", "the aggregator", cmd_aggregator),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--shards",
            metavar="K,K",
            help="the stream shards to consume, e.g. 0,2 (default: CLASSPULSE_STREAM_SHARDS_OWNED, "
            "else all of CLASSPULSE_STREAM_SHARDS)",
        )
        p.set_defaults(func=func)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-admin", help="create an admin (or teacher) account")
    p.add_argument("--email", required=True)
    p.add_argument("--password", help="default: prompt (or CLASSPULSE_NEW_PASSWORD)")
    p.add_argument("--role", choices=["admin", "teacher"], default="admin")
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_create_admin)


def settings_from(args: argparse.Namespace, *, keyless: bool = False) -> Settings:
    """The settings, with --host/--port (--shards) given on the command line taking precedence;
    ``keyless`` for a process that signs no token (classpulse.settings.KeylessSettings)."""
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    if getattr(args, "shards", None) is not None:
        overrides["stream_shards_owned"] = args.shards
    return (keyless_settings if keyless else get_settings)(**overrides)


def without_signing_key(env: dict[str, str]) -> dict[str, str]:
    """A child process's environment without the signing key: for every process but the
    gateway (the worker decodes untrusted images; none of them signs or verifies a token)."""
    return {k: v for k, v in env.items() if k != SIGNING_KEY_ENV}


def _need(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        env = ", ".join(f"CLASSPULSE_{n.upper()}" for n in missing)
        raise SystemExit(f"error: {env} not set (or use `classpulse run` for the embedded default)")


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _need(settings, "database_url", "redis_url")
    from app.main import run_gateway

    run_gateway(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args, keyless=True)
    _need(settings, "redis_url")
    from worker.service import main

    return main(settings)


def cmd_aggregator(args: argparse.Namespace) -> int:
    settings = settings_from(args, keyless=True)
    _need(settings, "database_url", "redis_url")
    from aggregator.service import main

    return main(settings)


def cmd_migrate(_args: argparse.Namespace) -> int:
    settings = keyless_settings()
    _need(settings, "database_url")
    from classpulse.migrate import upgrade

    upgrade(settings.database_url)  # type: ignore[arg-type]
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    settings = keyless_settings()
    _need(settings, "database_url")
    password = args.password or os.environ.get("CLASSPULSE_NEW_PASSWORD") or getpass.getpass()
    from classpulse.accounts import AccountError, create_user

    try:
        with _db_session(settings.database_url) as db:  # type: ignore[arg-type]
            user = create_user(db, args.email, password, role=args.role, display_name=args.name)
            db.commit()
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created {user.role} {user.email}")
    return 0


def _db_session(url: str):
    from sqlalchemy.orm import Session

    from classpulse.db import make_engine

    # expire_on_commit=False: callers print what they created after the commit and the close.
    return Session(make_engine(url), expire_on_commit=False)


def bootstrap_admin(settings: Settings) -> None:
    """Create the admin from CLASSPULSE_ADMIN_EMAIL/PASSWORD when no admin exists yet."""
    from classpulse.accounts import AccountError, admin_exists, create_user

    with _db_session(settings.database_url) as db:  # type: ignore[arg-type]
        if admin_exists(db):
            return
        if not (settings.admin_email and settings.admin_password):
            print(
                "No admin account yet. Create one with:\n"
                "  classpulse create-admin --email you@school.example\n"
                "or set CLASSPULSE_ADMIN_EMAIL and CLASSPULSE_ADMIN_PASSWORD before `classpulse run`.",
                file=sys.stderr,
            )
            return
        try:
            create_user(db, settings.admin_email, settings.admin_password, role="admin")
            db.commit()
            log.info("created the bootstrap admin %s", settings.admin_email)
        except AccountError as exc:
            raise SystemExit(f"error: cannot create the bootstrap admin: {exc}") from exc

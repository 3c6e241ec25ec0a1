"""Service subcommands: run, gateway, worker, aggregator, migrate, create-admin."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from classpulse.settings import Settings, get_settings

log = logging.getLogger("classpulse")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="everything on one machine (embedded PostgreSQL/Redis by default)")
    p.add_argument("--host", help="listen address (default CLASSPULSE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default CLASSPULSE_PORT or 8000)")
    p.add_argument("--workers", type=int, default=1, help="inference worker processes")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("gateway", help="the FastAPI gateway alone")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_gateway)
    sub.add_parser("worker", help="one inference worker").set_defaults(func=cmd_worker)
    sub.add_parser("aggregator", help="the aggregator").set_defaults(func=cmd_aggregator)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-admin", help="create an admin (or teacher) account")
    p.add_argument("--email", required=True)
    p.add_argument("--password", help="default: prompt (or CLASSPULSE_NEW_PASSWORD)")
    p.add_argument("--role", choices=["admin", "teacher"], default="admin")
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_create_admin)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    return get_settings(**overrides)


def _need(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        env = ", ".join(f"CLASSPULSE_{n.upper()}" for n in missing)
        raise SystemExit(f"error: {env} not set (or use `classpulse run` for the embedded default)")


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _need(settings, "database_url", "redis_url")
    from app.main import run_gateway

    run_gateway(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    _need(settings, "redis_url")
    from worker.service import main

    return main(settings)


def cmd_aggregator(args: argparse.Namespace) -> int:
    settings = get_settings()
    _need(settings, "database_url", "redis_url")
    from worker.aggregator import main

    return main(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    _need(settings, "database_url")
    from classpulse.migrate import upgrade

    upgrade(settings.database_url)  # type: ignore[arg-type]
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    settings = get_settings()
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


@dataclass
class Child:
    """A supervised service process, restarted with backoff when it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()

    def check(self, now: float) -> None:
        if self.proc is None:
            if now >= self.next_start:
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            if now - self.started_at > 60:
                self.restarts = 0  # ran fine for a minute: forget earlier crashes
            return
        delay = min(30.0, 0.5 * 2**self.restarts)
        self.restarts += 1
        log.warning("%s exited with code %s; restarting in %.1fs", self.name, code, delay)
        self.proc, self.next_start = None, now + delay


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from classpulse.embedded import EmbeddedServices
    from classpulse.migrate import upgrade

    embedded = EmbeddedServices(settings.data_dir)
    env = dict(os.environ)
    stopping = False

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[Child] = []
    try:
        if settings.database_url is None:
            env["CLASSPULSE_DATABASE_URL"] = embedded.start_postgres()
        if settings.redis_url is None:
            env["CLASSPULSE_REDIS_URL"] = embedded.start_redis()
        settings = settings.model_copy(update={
            "database_url": env["CLASSPULSE_DATABASE_URL"], "redis_url": env["CLASSPULSE_REDIS_URL"],
        })
        upgrade(settings.database_url)  # type: ignore[arg-type]
        bootstrap_admin(settings)
        env["CLASSPULSE_HOST"], env["CLASSPULSE_PORT"] = settings.host, str(settings.port)
        exe = [sys.executable, "-m", "classpulse"]
        children = [Child("gateway", [*exe, "gateway"], env), Child("aggregator", [*exe, "aggregator"], env)]
        children += [Child(f"worker-{i + 1}", [*exe, "worker"], env) for i in range(max(1, args.workers))]
        for child in children:
            child.start()
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        print(
            f"\nClassPulse is starting at {base}\n"
            f"  teachers: {base}/login   API docs: {base}/docs   health: {base}/readyz\n"
            f"  data folder: {settings.data_dir.resolve()}\n  Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.check(now)
            time.sleep(0.2)
    finally:
        _stop_children(children)
        embedded.stop()
    return 0


def _stop_children(children: list[Child]) -> None:
    """SIGTERM everyone (workers finish their batch), then wait, then kill what is left."""
    for child in children:
        if child.proc and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.name)
            child.proc.kill()
    log.info("all ClassPulse processes stopped")

"""``classpulse export``: session reports for scripts (CSV, JSON or PDF), audited as "cli"."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import date
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export session reports (CSV, JSON or PDF)")
    for flag, dest, what in (
        ("--from", "start", "first day, YYYY-MM-DD (UTC; sessions by creation day)"),
        ("--to", "end", "last day, YYYY-MM-DD (inclusive)"),
    ):
        p.add_argument(flag, dest=dest, type=date.fromisoformat, required=True, help=what)
    p.add_argument("--session", type=uuid.UUID, help="only this session id")
    p.add_argument("--format", choices=["csv", "json", "pdf"], default="csv")
    p.add_argument("--out", type=Path, help="output file (default: stdout; PDF needs --out)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import sessionmaker

    from classpulse import policy as org_policy
    from classpulse.cli.services import _need
    from classpulse.db import make_engine
    from classpulse.settings import keyless_settings
    from records import exports

    settings = keyless_settings()
    _need(settings, "database_url")
    if args.format == "pdf" and args.out is None:
        print("error: --format pdf needs --out FILE", file=sys.stderr)
        return 2
    if args.end < args.start:
        print("error: --to is before --from", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)  # type: ignore[arg-type]
    make_session = sessionmaker(engine, expire_on_commit=False)
    try:
        with make_session() as db:
            policy = org_policy.load(db)
            ids = exports.session_ids(db, args.start, args.end, args.session)
            detail = {
                "from": args.start.isoformat(),
                "to": args.end.isoformat(),
                "format": args.format,
                "sessions": [str(i) for i in ids],
            }
            exports.record(db, None, "export", args.session, detail, actor_email="cli")
        out = sys.stdout.buffer if args.out is None else args.out.open("wb")
        try:
            for piece in exports.export_file(
                make_session,
                ids,
                policy,
                settings.bucket_seconds,
                args.format,
                args.start,
                args.end,
            ):
                out.write(piece)
            if args.format == "json":
                out.write(b"\n")
        finally:
            if args.out is None:
                out.flush()
            else:
                out.close()
    finally:
        engine.dispose()
    if args.out is not None:
        print(f"wrote {len(ids)} session(s) to {args.out}", file=sys.stderr)
    return 0

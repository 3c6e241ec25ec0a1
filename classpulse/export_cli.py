"""``classpulse export``: session reports for scripts (CSV, JSON or PDF), audited as "cli"."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import date
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export session reports (CSV, JSON or PDF)")
    p.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        required=True,
        help="first day, YYYY-MM-DD (UTC; sessions by creation day)",
    )
    p.add_argument(
        "--to",
        dest="end",
        type=date.fromisoformat,
        required=True,
        help="last day, YYYY-MM-DD (inclusive)",
    )
    p.add_argument("--session", type=uuid.UUID, help="only this session id")
    p.add_argument("--format", choices=["csv", "json", "pdf"], default="csv")
    p.add_argument("--out", type=Path, help="output file (default: stdout; PDF needs --out)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from classpulse import audit, reports
    from classpulse import policy as org_policy
    from classpulse.commands import _db_session, _need
    from classpulse.settings import get_settings

    settings = get_settings()
    _need(settings, "database_url")
    if args.format == "pdf" and args.out is None:
        print("error: --format pdf needs --out FILE", file=sys.stderr)
        return 2
    if args.end < args.start:
        print("error: --to is before --from", file=sys.stderr)
        return 2
    with _db_session(settings.database_url) as db:  # type: ignore[arg-type]
        policy = org_policy.load(db)
        sessions = reports.sessions_between(db, args.start, args.end, args.session)
        built = [reports.build_report(db, s, policy, settings.bucket_seconds) for s in sessions]
        if args.format == "csv":
            data: bytes = reports.write_csv(built).encode()
        elif args.format == "json":
            doc = {
                "from": args.start.isoformat(),
                "to": args.end.isoformat(),
                "policy": policy.as_dict(),
                "sessions": [r.as_json() for r in built],
            }
            data = (json.dumps(doc, indent=1) + "\n").encode()
        else:
            from classpulse import report_pdf

            data = report_pdf.render(built)
        entry = audit.record(
            db,
            None,
            "export.report",
            "export",
            args.session,
            {
                "from": args.start.isoformat(),
                "to": args.end.isoformat(),
                "format": args.format,
                "sessions": [str(s.id) for s in sessions],
            },
        )
        entry.actor_email = "cli"
        db.commit()
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.out.write_bytes(data)
        print(f"wrote {len(sessions)} session(s) to {args.out}", file=sys.stderr)
    return 0

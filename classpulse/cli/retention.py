"""`classpulse retention`: one retention sweep now (the aggregator runs it every ten minutes)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "retention", help="delete data past the policy's retention period (once)"
    ).set_defaults(func=cmd_retention)


def cmd_retention(_args: argparse.Namespace) -> int:
    from classpulse.db import make_engine
    from classpulse.settings import keyless_settings
    from records.retention import purge

    settings = keyless_settings()
    if not settings.database_url:
        raise SystemExit("error: CLASSPULSE_DATABASE_URL not set")
    engine = make_engine(settings.database_url)
    try:
        counts = purge(
            engine,
            audit_days=settings.audit_retention_days,
            whole_days=settings.retention_whole_days,
        )
    finally:
        engine.dispose()
    for name, n in counts.items():
        print(f"{name}: {n} deleted")
    return 0

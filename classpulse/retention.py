"""Retention: delete what is older than the policy's ``retention_days``.

Aggregates (per-student and class buckets), alerts, consent records, audit entries, and the
students (display names) of sessions that ended before the cut-off. ``applied_results`` only
guard replays while a result can still be in the stream, so they go after a day.

The aggregator process runs it every ten minutes in a thread of its own (``Retention.run``), so
a large backlog never stalls the live folding; ``classpulse retention`` runs it once. Deletes go
in batches so they never hold long locks against the live writes.
"""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from classpulse import policy as policy_mod
from classpulse.db import utcnow

log = logging.getLogger(__name__)

BATCH = 5_000
APPLIED_RESULTS_KEEP = timedelta(days=1)
EVERY_S = 600.0  # applied_results grow by one row per frame: prune them in small steps

# (what, table, the row's time, a key that identifies rows for batched deletes)
_TABLES = (
    ("emotion_buckets", "emotion_buckets", "bucket_start", "ctid"),
    ("class_buckets", "class_buckets", "bucket_start", "ctid"),
    ("alerts", "alerts", "coalesce(ended_at, started_at)", "id"),
    ("consent_records", "consent_records", "at", "id"),
    ("audit_log", "audit_log", "at", "id"),
)


def _delete(engine: Engine, table: str, when: str, key: str, cutoff: datetime) -> int:
    """Delete rows of ``table`` with ``when < cutoff`` in batches; return how many."""
    sql = text(
        f"DELETE FROM {table} WHERE {key} IN "  # noqa: S608 (names are the constants above)
        f"(SELECT {key} FROM {table} WHERE {when} < :cutoff LIMIT {BATCH})"
    )
    total = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(sql, {"cutoff": cutoff}).rowcount or 0
        total += n
        if n < BATCH:
            return total


def purge(engine: Engine, now: datetime | None = None) -> dict[str, int]:
    """Delete everything past its retention period; return the rows deleted per kind."""
    now = now or utcnow()
    with Session(engine) as db:
        policy = policy_mod.load(db)
    cutoff = now - timedelta(days=policy.retention_days)
    counts = {
        name: _delete(engine, table, when, key, cutoff) for name, table, when, key in _TABLES
    }
    # Display names of sessions long over (their buckets and records are gone by now too).
    counts["students"] = _delete(
        engine,
        "students",
        "(SELECT ended_at FROM class_sessions WHERE class_sessions.id = students.session_id)",
        "id",
        cutoff,
    )
    counts["applied_results"] = _delete(
        engine, "applied_results", "applied_at", "id", now - APPLIED_RESULTS_KEEP
    )
    log.info(
        "retention (%d days): deleted %s",
        policy.retention_days,
        ", ".join(f"{n} {k}" for k, n in counts.items()),
    )
    return counts


class Retention:
    """``purge`` every ``every_s`` until stopped (a thread of the aggregator process)."""

    def __init__(self, engine: Engine, every_s: float = EVERY_S) -> None:
        self.engine, self.every_s = engine, every_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                purge(self.engine)
            except Exception:  # retention must never take the aggregator down; retry later
                log.exception("retention run failed; retrying in %.0f s", self.every_s)
            stop.wait(self.every_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="retention", daemon=True)
        thread.start()
        return thread


# --- CLI ------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "retention", help="delete data past the policy's retention period (once)"
    ).set_defaults(func=cmd_retention)


def cmd_retention(args: argparse.Namespace) -> int:
    from classpulse.db import make_engine
    from classpulse.settings import get_settings

    settings = get_settings()
    if not settings.database_url:
        raise SystemExit("error: CLASSPULSE_DATABASE_URL not set")
    engine = make_engine(settings.database_url)
    try:
        counts = purge(engine)
    finally:
        engine.dispose()
    for name, n in counts.items():
        print(f"{name}: {n} deleted")
    return 0

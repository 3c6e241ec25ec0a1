"""Retention: delete what is older than the policy's ``retention_days``.

Aggregates (per-student and class buckets) and alerts older than the cut-off; students (display
names) whose last activity is older: the end of their session, or for a session nobody ended,
their latest bucket or consent change (their join when there is none). A student's consent
records go with the student (``ON DELETE CASCADE``), never before: they are the basis of what is
stored about them. The audit log keeps its own, longer period (``CLASSPULSE_AUDIT_RETENTION_DAYS``,
default 365, never shorter than ``retention_days``), so that an admin cannot erase the record of
their own exports by shortening the policy. ``applied_results`` only guard replays while a result
can still be in the stream, so they go after a day.

The aggregator process runs it every ten minutes in a thread of its own (``Retention.run``), so
a large backlog never stalls the live folding; ``classpulse retention`` runs it once. Deletes go
in batches so they never hold long locks against the live writes.

The bucket tables are partitioned by day (``records.partitions``): a sweep first makes sure the
coming days have their partitions, then drops the days wholly before the cut-off and deletes in
batches only what is left older than it (in the partition the cut-off falls in and the DEFAULT
partition), so the rule stays exact to the sweep. docs/retention.md has the measurements.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from classpulse import policy as policy_mod
from classpulse.db import OrgPolicy, utcnow
from records import partitions

log = logging.getLogger(__name__)

BATCH = 5_000
APPLIED_RESULTS_KEEP = timedelta(days=1)
EVERY_S = 600.0  # applied_results grow by one row per frame: prune them in small steps

# (what, table, the row's time, a key that identifies rows for batched deletes)
_TABLES = (
    ("emotion_buckets", "emotion_buckets", "bucket_start", "ctid"),
    ("class_buckets", "class_buckets", "bucket_start", "ctid"),
    ("alerts", "alerts", "coalesce(ended_at, started_at)", "id"),
)

# A student's last activity: the end of their session; for a session nobody ended, their own
# latest bucket (the primary key's prefix finds it) or consent change, else their join
# (GREATEST ignores NULLs). ``+ interval '0'``: no max() shortcut through the partitions'
# bucket_start indexes, which would read every partition the student has no rows in, backwards
# and whole (seconds per student); the primary key's prefix finds their few rows instead.
_STUDENT_LAST_ACTIVE = """coalesce(
    (SELECT ended_at FROM class_sessions WHERE class_sessions.id = students.session_id),
    GREATEST(
        students.joined_at, students.consent_at, students.withdrawn_at,
        (SELECT max(b.bucket_start + interval '0') FROM emotion_buckets b
         WHERE b.session_id = students.session_id AND b.student_id = students.id)))"""

# One batch of students, with how many consent records go with them (the cascade): every
# sub-statement sees the snapshot from before the delete.
_DELETE_STUDENTS = text(
    f"""
    WITH gone AS (
        DELETE FROM students WHERE id IN (
            SELECT id FROM students WHERE {_STUDENT_LAST_ACTIVE} < :cutoff LIMIT {BATCH}
        ) RETURNING id
    )
    SELECT (SELECT count(*) FROM gone),
           (SELECT count(*) FROM consent_records WHERE student_id IN (SELECT id FROM gone))
    """  # noqa: S608 (constants only)
)


def _delete(engine: Engine, table: str, when: str, key: str, cutoff: datetime) -> int:
    """Delete rows of ``table`` with ``when < cutoff`` in batches; return how many."""
    sql = text(
        f"DELETE FROM {table} WHERE {key} IN "  # noqa: S608 (names: constants, quoted partitions)
        f"(SELECT {key} FROM {table} WHERE {when} < :cutoff LIMIT {BATCH})"
    )
    total = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(sql, {"cutoff": cutoff}).rowcount or 0
        total += n
        if n < BATCH:
            return total


def _delete_buckets(
    engine: Engine, table: str, when: str, key: str, cutoff: datetime, whole_days: bool
) -> int:
    """Retire a partitioned bucket table's days wholly before ``cutoff`` (DROP), then delete in
    batches what is left older than it, partition by partition (a ``ctid`` is unique only
    within one). ``whole_days``: leave the rows of the daily partition the cut-off falls in for
    the DROP of that day (at most a day late) instead of deleting them as the cut-off moves.
    A table that is not partitioned is deleted from in batches."""
    with engine.connect() as conn:
        if partitions.list_partitions(conn, table) is None:
            return _delete(engine, table, when, key, cutoff)
    with partitions.maintenance(engine) as held:
        if not held:  # another process's sweep is retiring this table's rows right now
            return 0
        dropped = partitions.retire(engine, table, cutoff) or 0
        deleted = 0
        for part in partitions.candidates(engine, table, cutoff) or []:
            if whole_days and part.day is not None and part.end is not None and part.end > cutoff:
                continue
            deleted += _delete(engine, partitions.quoted(part.name), when, key, cutoff)
        return dropped + deleted


def _delete_students(engine: Engine, cutoff: datetime) -> tuple[int, int]:
    """Delete students inactive since before ``cutoff``; return (students, consent records)."""
    students = consents = 0
    while True:
        with engine.begin() as conn:
            # The planner prices the per-student subquery over every bucket partition far above
            # its cost (a few index probes); JIT compiling it would take most of the sweep.
            conn.execute(text("SET LOCAL jit = off"))
            n, k = conn.execute(_DELETE_STUDENTS, {"cutoff": cutoff}).one()
        students, consents = students + n, consents + k
        if n < BATCH:
            return students, consents


def audit_retention_days(policy: policy_mod.Policy, configured: int | None = None) -> int:
    """The audit log's period: the configured one, never shorter than the data's."""
    if configured is None:
        from classpulse.settings import get_settings

        configured = get_settings().audit_retention_days
    return max(configured, policy.retention_days)


def purge(
    engine: Engine,
    now: datetime | None = None,
    audit_days: int | None = None,
    whole_days: bool = False,
) -> dict[str, int]:
    """Delete everything past its retention period; return the rows deleted per kind (for the
    bucket tables, the rows of dropped partitions included).

    ``audit_days``: the audit log's period (default: ``CLASSPULSE_AUDIT_RETENTION_DAYS``),
    raised to the policy's ``retention_days`` when shorter. ``whole_days``: bucket rows go with
    their day's partition, up to a day after the cut-off, and no longer row by row (see
    ``_delete_buckets``). Bucket partitions are created for the coming days first."""
    now = now or utcnow()
    with Session(engine) as db:
        # The period only, not the whole row: retention still runs on a database that a newer
        # release's columns have not reached yet (an upgrade under way, a test at an old revision).
        days = db.scalar(select(OrgPolicy.retention_days).where(OrgPolicy.id == 1))
    policy = policy_mod.Policy(retention_days=days) if days else policy_mod.Policy()
    cutoff = now - timedelta(days=policy.retention_days)
    partitions.ensure(engine, now.astimezone(UTC).date())
    counts = {
        name: _delete_buckets(engine, table, when, key, cutoff, whole_days)
        if table in partitions.TABLES
        else _delete(engine, table, when, key, cutoff)
        for name, table, when, key in _TABLES
    }
    # After the buckets: a student whose latest bucket just went counts by their join.
    counts["students"], counts["consent_records"] = _delete_students(engine, cutoff)
    audit_days = audit_retention_days(policy, audit_days)
    counts["audit_log"] = _delete(engine, "audit_log", "at", "id", now - timedelta(days=audit_days))
    counts["applied_results"] = _delete(
        engine, "applied_results", "applied_at", "id", now - APPLIED_RESULTS_KEEP
    )
    log.info(
        "retention (%d days, audit log %d days): deleted %s",
        policy.retention_days,
        audit_days,
        ", ".join(f"{n} {k}" for k, n in counts.items()),
    )
    return counts


class Retention:
    """``purge`` every ``EVERY_S`` until stopped (a thread of the aggregator process)."""

    def __init__(
        self, engine: Engine, audit_days: int | None = None, whole_days: bool = False
    ) -> None:
        self.engine, self.audit_days, self.whole_days = engine, audit_days, whole_days

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                purge(self.engine, audit_days=self.audit_days, whole_days=self.whole_days)
            except Exception:  # retention must never take the aggregator down; retry later
                log.exception("retention run failed; retrying in %.0f s", EVERY_S)
            stop.wait(EVERY_S)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="retention", daemon=True)
        thread.start()
        return thread

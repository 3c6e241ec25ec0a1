"""Daily partitions of the bucket tables: created ahead, retired by dropping them.

``emotion_buckets`` and ``class_buckets`` are partitioned by range of ``bucket_start``, one
partition per UTC day named ``<table>_pYYYYMMDD``, plus ``<table>_default`` for any row no daily
partition covers (migration 0006). The retention sweep (``records.retention.purge``, every ten
minutes in the aggregator) calls ``ensure`` so that today and the next ``DAYS_AHEAD`` days always
have their partition, and ``retire`` to drop the partitions that lie wholly before the
retention cut-off: dropping a day costs the same whatever its rows, writes no WAL per row and
leaves no dead rows behind, where a DELETE of the same rows costs time, WAL and vacuum in
proportion to them (docs/retention.md has the measurements). The rows of the partition the
cut-off falls in, and those of the DEFAULT partition, are deleted row by row by the sweep
(``candidates`` names them), so no row outlives the cut-off by more than a sweep.

DDL on a partitioned table takes a brief ACCESS EXCLUSIVE lock on the parent (creating or
dropping a partition), which waits for running statements and makes new ones wait behind it:
each statement runs with ``LOCK_TIMEOUT`` and is retried by the next sweep when it times out,
so a long report query never stalls the live upserts for longer than that. A session-level
advisory lock lets one process at a time do this work (several aggregators may run sweeps).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

TABLES = ("emotion_buckets", "class_buckets")
DAYS_AHEAD = 7  # partitions exist for today and this many days after
LOCK_TIMEOUT = "2s"
DROP_TRIES = 3
ADVISORY_KEY = 0x43505041  # "CPPA": one process at a time creates and drops partitions

_PARTITIONS = text(
    """
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(:table)
    ORDER BY c.relname
    """
)


@dataclass(frozen=True)
class Partition:
    name: str
    day: date | None  # None: the DEFAULT partition, or one not made by this module
    is_default: bool = False

    @property
    def start(self) -> datetime | None:
        if self.day is None:
            return None
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime | None:
        start = self.start
        return None if start is None else start + timedelta(days=1)


def day_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _day_of(table: str, name: str) -> date | None:
    m = re.fullmatch(re.escape(table) + r"_p(\d{4})(\d{2})(\d{2})", name)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def list_partitions(conn: Connection, table: str) -> list[Partition] | None:
    """The partitions of ``table``; None when it is not a partitioned table."""
    kind = conn.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    ).scalar()
    if kind != "p":
        return None
    return [
        Partition(name, None if is_default else _day_of(table, name), bool(is_default))
        for name, is_default in conn.execute(_PARTITIONS, {"table": table})
    ]


def quoted(name: str) -> str:
    """``name`` as an SQL identifier (partitions made by hand may have any name)."""
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def maintenance(engine: Engine) -> Iterator[bool]:
    """Yield whether this process got the partition-maintenance lock (held until the block
    ends); when another process holds it, that one is doing the work."""
    with engine.connect() as conn:
        held = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        )
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                conn.commit()


def _ddl(engine: Engine, statement: str, what: str) -> bool:
    """Run one DDL statement under ``LOCK_TIMEOUT``; False (logged) when it failed."""
    try:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            conn.execute(text(statement))
        return True
    except DBAPIError as exc:
        log.warning("partitions: %s failed, the next sweep retries: %s", what, exc.orig)
        return False


def ensure(engine: Engine, today: date | None = None, days_ahead: int = DAYS_AHEAD) -> list[str]:
    """Create the daily partitions of today .. today + ``days_ahead`` that are missing; return
    their names. A day whose rows already went to the DEFAULT partition (nothing covered it
    when they were written) keeps them there: the partition cannot take that range until they
    are gone, and retention deletes them from the DEFAULT partition as from any other."""
    today = today or datetime.now(UTC).date()
    created: list[str] = []
    with maintenance(engine) as held:
        if not held:
            return created
        for table in TABLES:
            with engine.connect() as conn:
                parts = list_partitions(conn, table)
                if parts is None:
                    continue
                have = {p.day for p in parts}
                default = next((p.name for p in parts if p.is_default), None)
            for i in range(days_ahead + 1):
                day = today + timedelta(days=i)
                if day in have:
                    continue
                part = Partition(day_name(table, day), day)
                with engine.connect() as conn:
                    if (
                        default
                        and conn.execute(
                            text(
                                f"SELECT EXISTS (SELECT 1 FROM {quoted(default)}"  # noqa: S608
                                " WHERE bucket_start >= :lo AND bucket_start < :hi)"
                            ),
                            {"lo": part.start, "hi": part.end},
                        ).scalar()
                    ):
                        log.warning(
                            "partitions: %s's rows of %s are in %s; no partition for that day",
                            table,
                            day,
                            default,
                        )
                        continue
                assert part.start is not None and part.end is not None
                if _ddl(
                    engine,
                    f"CREATE TABLE IF NOT EXISTS {quoted(part.name)} PARTITION OF {quoted(table)}"
                    " FOR VALUES"
                    f" FROM ('{part.start.isoformat()}') TO ('{part.end.isoformat()}')",
                    f"creating {part.name}",
                ):
                    created.append(part.name)
    if created:
        log.info("partitions: created %s", ", ".join(created))
    return created


def retire(engine: Engine, table: str, cutoff: datetime) -> int | None:
    """Drop the daily partitions of ``table`` that lie wholly before ``cutoff``; return how many
    rows they held (``count(*)`` of each, read just before its DROP), or None when ``table`` is
    not partitioned. Call it holding ``maintenance``. A partition whose DROP timed out on its
    lock ``DROP_TRIES`` times stays; the caller deletes its rows in batches instead."""
    with engine.connect() as conn:
        parts = list_partitions(conn, table)
    if parts is None:
        return None
    rows = 0
    for part in parts:
        if part.end is None or part.end > cutoff:
            continue
        name = quoted(part.name)
        with engine.connect() as conn:
            # Made by this module, so its rows are of its day; checked all the same (the
            # same scan as the count), so that a partition made by hand is never dropped whole.
            newest, n = conn.execute(
                text(f"SELECT max(bucket_start), count(*) FROM {name}")  # noqa: S608
            ).one()
        if newest is not None and newest >= cutoff:
            log.warning("partitions: %s holds rows from %s; not dropped", part.name, newest)
            continue
        for attempt in range(DROP_TRIES):
            if _ddl(engine, f"DROP TABLE IF EXISTS {name}", f"dropping {part.name}"):
                rows += int(n)
                log.info("partitions: dropped %s (%d rows)", part.name, n)
                break
            time.sleep(0.5 * (attempt + 1))
    return rows


def candidates(engine: Engine, table: str, cutoff: datetime) -> list[Partition] | None:
    """The partitions of ``table`` that may still hold rows older than ``cutoff`` once
    ``retire`` has run: the one the cut-off falls in, the DEFAULT partition, any partition not
    named by day (and any daily one ``retire`` could not drop); None when not partitioned."""
    with engine.connect() as conn:
        parts = list_partitions(conn, table)
    if parts is None:
        return None
    return [p for p in parts if p.start is None or p.start < cutoff]

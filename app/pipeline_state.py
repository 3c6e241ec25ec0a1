"""What the gateway reads of the pipeline in Redis: heartbeats of the workers and aggregators,
the streams' length, pending entries and consumer-group lag, and this gateway's own drops. One
reader for the readiness check, ``/metrics``, the admin's status and a session's stream stats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from classpulse import contracts

if TYPE_CHECKING:  # app.metrics reads the pipeline through this module
    from app.metrics import Metrics


def as_text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def count_keys(redis: Redis, pattern: str) -> int:
    """Number of keys matching pattern, by SCAN (never KEYS, which blocks Redis)."""
    return sum([1 async for _ in redis.scan_iter(match=pattern, count=500)])


async def workers_alive(redis: Redis) -> int:
    """Inference workers whose heartbeat key has not expired."""
    return await count_keys(redis, contracts.WORKER_HEARTBEAT_PREFIX + "*")


async def heartbeats(redis: Redis, prefix: str) -> dict[str, float | None]:
    """Each service of a kind (heartbeat key prefix) -> seconds since its last beat (None where
    the key holds no time), by name."""
    now = time.time()
    keys = sorted([as_text(k) async for k in redis.scan_iter(match=prefix + "*", count=500)])
    values = await redis.mget(keys) if keys else []
    out: dict[str, float | None] = {}
    for key, value in zip(keys, values, strict=True):
        try:
            out[key[len(prefix) :]] = round(max(0.0, now - float(as_text(value))), 1)
        except (TypeError, ValueError):
            out[key[len(prefix) :]] = None
    return out


@dataclass
class StreamGroup:
    stream: str
    group: str
    length: int | None  # None: Redis could not say (the key is not a stream)
    pending: int | None  # read by a consumer, not yet acknowledged; None: no such group yet
    lag: int | None  # not yet delivered to the group (Redis 7+; None where unknown)


def shard_groups(shards: int) -> list[tuple[str, str]]:
    """Every frames shard with the workers' group, then every results shard with the
    aggregators'."""
    pairs = [(s, contracts.WORKER_GROUP) for s in contracts.frames_streams(shards)]
    return pairs + [(s, contracts.AGGREGATOR_GROUP) for s in contracts.results_streams(shards)]


async def stream_groups(redis: Redis, pairs: list[tuple[str, str]]) -> list[StreamGroup]:
    """Length, pending and lag of each (stream, group), in one pipelined round trip; raises
    RedisError or OSError when Redis does not answer."""
    pipe = redis.pipeline(transaction=False)
    for stream, _group in pairs:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    replies = await pipe.execute(raise_on_error=False)
    out = []
    for i, (stream, group) in enumerate(pairs):
        n, groups = replies[2 * i], replies[2 * i + 1]
        state = StreamGroup(stream, group, None if isinstance(n, Exception) else int(n), None, None)
        for info in groups if isinstance(groups, list) else []:  # an error: no stream yet
            if as_text(info.get("name")) == group:
                state.pending = int(info.get("pending") or 0)
                state.lag = None if info.get("lag") is None else int(info["lag"])
        out.append(state)
    return out


def gateway_drops(metrics: Metrics) -> dict[str, float]:
    """This gateway's refusals since it started, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.frames_dropped.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }

"""Prometheus metrics of one gateway app, plus the pipeline counters read from Redis per scrape."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import pipeline_state
from classpulse import contracts, edge_wire

log = logging.getLogger(__name__)

DROP_REASONS = (
    "too_large",
    "not_jpeg",
    "rate_limited",
    "queue_full",
    "redis_down",
    *edge_wire.REASONS,
)
INGEST_KINDS = ("frame", "faces")  # a JPEG frame, or an edge-capture faces message
RATE_LIMITS = ("login_address", "login_account", "join_address", "join_code", "control_message")


class Metrics:
    """Per-app registry, not the global one: tests build many apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_received = Counter(
            "classpulse_frames_received", "Binary frame messages received", registry=r
        )
        self.frames_accepted = Counter(
            "classpulse_frames_accepted", "Frames written to the frames stream", registry=r
        )
        self.frames_captured = Counter(
            "classpulse_frames_captured",
            "Frames the student pages captured (as they report them; sent or skipped)",
            registry=r,
        )
        # Not registered: exposed together with the workers' drops as one family (see render).
        self.frames_dropped = Counter(
            "classpulse_frames_dropped", "Frames refused or dropped", ["reason"], registry=None
        )
        # Export zeros so rates work before the first drop; ``dropped`` keeps the children.
        self._dropped = {reason: self.frames_dropped.labels(reason) for reason in DROP_REASONS}
        self.ingest_messages = Counter(
            "classpulse_ingest_messages",
            "Binary messages received from student pages, by kind (frame: JPEG; faces: edge "
            "capture), refused ones included",
            ["kind"],
            registry=r,
        )
        self.ingest_bytes = Counter(
            "classpulse_ingest_bytes",
            "Bytes of the binary messages received from student pages, by kind",
            ["kind"],
            registry=r,
        )
        # Children bound once: labels() takes a lock and builds a key on every call, and the
        # student socket counts every binary message (ws_student: received, kind, bytes, outcome).
        self.ingest = {
            kind: (self.ingest_messages.labels(kind), self.ingest_bytes.labels(kind))
            for kind in INGEST_KINDS
        }
        self.capture_fallbacks = Counter(
            "classpulse_capture_fallbacks",
            "Student pages that fell back from edge capture to JPEG frames, by reason",
            ["reason"],
            registry=r,
        )
        for reason in contracts.CAPTURE_FALLBACKS:
            self.capture_fallbacks.labels(reason)
        self.sockets = Gauge(
            "classpulse_websockets", "Open WebSocket connections", ["kind"], registry=r
        )
        for kind in ("student", "teacher"):
            self.sockets.labels(kind)
        self.live_dropped = Counter(
            "classpulse_live_dropped",
            "Live messages dropped because a socket's queue was full",
            registry=r,
        )
        self.rate_limited = Counter(
            "classpulse_rate_limited",
            "Logins, joins and socket control messages refused by a rate limit",
            ["limit"],
            registry=r,
        )
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit)
        self.frame_queue = Gauge(
            "classpulse_frame_queue_depth", "Frames waiting for the frame writer", registry=r
        )
        self.target_fps = Gauge(
            "classpulse_target_fps",
            "Frame rate pages are asked to send at (backpressure)",
            registry=r,
        )
        self.worker_lag = Gauge(
            "classpulse_worker_lag_ms", "Age of the frames the slowest worker reads", registry=r
        )

    def dropped(self, reason: str) -> Counter:
        """The drop counter of ``reason`` (bound once per reason, not per frame)."""
        child = self._dropped.get(reason)
        if child is None:
            child = self._dropped[reason] = self.frames_dropped.labels(reason)
        return child

    async def render(self, redis: Redis, shards: int = 1) -> bytes:
        """Exposition text: this process's metrics, then the pipeline's shared counters."""
        gateway_drops = pipeline_state.gateway_drops(self)
        pipeline = await _pipeline_registry(redis, gateway_drops, shards)
        return generate_latest(self.registry) + generate_latest(pipeline)


async def _pipeline_registry(
    redis: Redis, gateway_drops: dict[str, float], shards: int
) -> CollectorRegistry:
    # The worker and aggregator keep their counters in one Redis hash so that any gateway can
    # expose them; read at scrape time rather than polled.
    pipeline = CounterMetricFamily(
        "classpulse_pipeline",
        "Worker and aggregator counters (Redis hash cp:stats)",
        labels=["counter"],
    )
    workers = GaugeMetricFamily("classpulse_workers_alive", "Workers with a live heartbeat key")
    backlog = GaugeMetricFamily(
        "classpulse_frames_stream_length", "Entries in the frames stream (all shards)"
    )
    processed = CounterMetricFamily(
        "classpulse_frames_processed", "Frames the workers analysed (all workers)"
    )
    # One family for every drop, wherever it happened: the gateway's reasons from this process,
    # the workers' (stale, corrupt, ...) from the shared hash. Same reason name: summed.
    dropped = CounterMetricFamily(
        "classpulse_frames_dropped", "Frames refused or dropped, by reason", labels=["reason"]
    )
    try:
        stats = await redis.hgetall(contracts.STATS_KEY)
        alive = await pipeline_state.workers_alive(redis)
        length = 0
        for stream in contracts.frames_streams(shards):
            length += await redis.xlen(stream)
    except RedisError as exc:
        log.warning("metrics: cannot read pipeline counters from Redis: %s", exc)
        stats, alive, length = {}, None, None
    drops = dict(gateway_drops)
    for name, value in sorted(stats.items()):
        try:
            key = name.decode() if isinstance(name, bytes) else name
            pipeline.add_metric([key], float(value))
        except ValueError:
            continue  # a non-numeric field is not a counter
        if key == "worker.processed":
            processed.add_metric([], float(value))
        elif key.startswith("worker.dropped."):
            reason = key[len("worker.dropped.") :]
            drops[reason] = drops.get(reason, 0.0) + float(value)
    for reason, n in sorted(drops.items()):
        dropped.add_metric([reason], n)
    families: list = [dropped]
    if alive is not None and length is not None:
        workers.add_metric([], alive)
        backlog.add_metric([], length)
        families += [pipeline, processed, workers, backlog]
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Fixed(families))
    return registry


class _Fixed:
    """A collector that yields metric families computed beforehand."""

    def __init__(self, families: list[CounterMetricFamily | GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)

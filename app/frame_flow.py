"""Per-student frame counters and the pipeline's backpressure, as one gateway process sees them.

Counters: each student socket counts into a small dict; one task flushes every socket's dict to
the session's Redis hash once a second with pipelined HINCRBYs (one round trip for the whole
process, not one per frame). The worker adds ``processed`` and its own drops to the same hash.

Backpressure: the workers report how old the frames they read were (``cp:worker_lag``); when
that age passes a fifth of the freshness limit, or this process's frame writer queues up, the
target frame rate for every page is halved (down to ``MIN_FPS``), and raised again in small
steps once the lag stays low (AIMD, as TCP does). Sockets send the new rate to their page with the next ack.

Edge capture: the same tick reads the classifier's input side and crop scale the workers publish
(``cp:models``), which pages that run the detector themselves are told and their crops checked
against. Latest values per student (capture mode, detector time) are written with the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.tasks import stop_task
from classpulse import contracts
from classpulse.settings import Settings

log = logging.getLogger(__name__)

TICK_S = 1.0
MIN_FPS = 0.5
LAG_FRESH_S = 5.0  # a worker's lag report older than this is ignored (idle or dead worker)
COUNTERS = ("captured", "received", "accepted", "processed")
# Latest values per student (not counters): the page's capture mode ("edge" or "frames"), its
# detector's time per frame (ms) and why it fell back to frames, as its stats messages report them.
VALUES = ("capture", "detector_ms", "fallback")
# One call per session hash instead of one HINCRBY per field: 300 students' counters are ~900
# increments a second, and redis-py spends ~10 µs packing each command on the event loop (11 ms
# per flush measured), which showed up in the frames' p99 ingest latency; one script call with
# the same increments as arguments costs a fraction of that. ARGV: TTL, the number n of
# (field, increment) pairs, those pairs, then (field, value) pairs to set.
INCR_SCRIPT = """
local n = tonumber(ARGV[2])
for i = 3, 1 + 2 * n, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3 + 2 * n, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""
# Frames older than the freshness limit can only be dropped as stale: delete them, read or not
# (no worker running, a shard nobody owns), so no payload outlives its use. The cut-off comes
# from Redis's own clock, as the entry ids do. ARGV[1]: how old (ms) an entry may be.
TRIM_OLD_FRAMES_SCRIPT = """
redis.replicate_commands()
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
return redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
"""
MAX_CROP_SIZE = 255  # a crop's side travels in one byte of the faces message


@dataclass(slots=True)
class _Student:
    """One open socket's counters (HINCRBY) and latest values (HSET), until the next flush."""

    session_id: str
    student_id: str
    counts: Counter[str]
    values: dict[str, str] = field(default_factory=dict)


class FrameFlow:
    def __init__(self, redis: Redis, settings: Settings, queue_depth=lambda: 0) -> None:
        self._redis = redis
        self._queue_depth = queue_depth
        self.base_fps = min(2.0, settings.frame_max_fps)
        self.fps = self.base_fps  # the rate pages are asked to send at now
        self.reason = "normal"
        self.worker_lag_ms = 0.0
        # Lower when frames reach the workers a fifth of the way to stale; raise when under a
        # tenth for a few ticks. Low thresholds keep the queue (and so the latency) short.
        self._high_ms = settings.frame_max_age_ms / 5
        self._low_ms = settings.frame_max_age_ms / 10
        self._queue_high = 1024
        self._hold = 0  # ticks to wait after a change: the lag reading trails the rate
        self._calm = 0  # consecutive ticks under the low threshold
        self._open: dict[int, _Student] = {}
        # Edge capture: the classifier's input side and crop scale, as the workers publish them;
        # until one has, mini-Xception's side and this process's setting.
        self.crop_size = contracts.DEFAULT_CROP_SIZE
        self.crop_scale = settings.crop_scale
        self._task: asyncio.Task[None] | None = None
        self._incr = redis.register_script(INCR_SCRIPT) if redis is not None else None
        self._trim = redis.register_script(TRIM_OLD_FRAMES_SCRIPT) if redis is not None else None
        self._frames_keep_ms = 2 * settings.frame_max_age_ms
        # The stream shard count: every process must agree (a gateway writing to shards no worker
        # reads loses every frame); the workers publish theirs with their model info.
        self.stream_shards = settings.stream_shards
        self.workers_stream_shards: int | None = None

    # --- counters -----------------------------------------------------------------------------
    def open(self, session_id: str, student_id: str) -> Counter[str]:
        """The counter dict a socket increments; flushed until ``close`` (which flushes it)."""
        counts: Counter[str] = Counter()
        self._open[id(counts)] = _Student(session_id, student_id, counts)
        return counts

    def note(self, counts: Counter[str], name: str, value: str) -> None:
        """Keep a latest value (one of ``VALUES``) about the student whose counter dict this
        is; written to the session's hash with the next flush."""
        entry = self._open.get(id(counts))
        if entry is not None:
            entry.values[name] = value

    async def close(self, counts: Counter[str]) -> None:
        entry = self._open.pop(id(counts), None)
        if entry:
            with contextlib.suppress(RedisError, OSError):
                await self._write([entry])

    async def flush(self) -> None:
        await self._write(list(self._open.values()))

    async def _write(self, entries: list[_Student]) -> None:
        taken: list[tuple[_Student, dict[str, int], dict[str, str]]] = []
        by_session: dict[str, tuple[list[str | int], list[str]]] = {}
        for entry in entries:
            if not entry.counts and not entry.values:
                continue
            # Taken before the await: increments and values made meanwhile are kept.
            snapshot, values = dict(entry.counts), entry.values
            entry.counts.clear()
            entry.values = {}
            taken.append((entry, snapshot, values))
            incr, sets = by_session.setdefault(
                contracts.stream_stats_key(entry.session_id), ([], [])
            )
            for name, n in snapshot.items():
                incr += (f"{entry.student_id}:{name}", n)
            for name, value in values.items():
                sets += (f"{entry.student_id}:{name}", value)
        if not taken:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, (incr, sets) in by_session.items():
            args = [contracts.STATE_TTL_S, len(incr) // 2, *incr, *sets]
            await self._incr(keys=[key], args=args, client=pipe)
        try:
            await pipe.execute()
        except (RedisError, OSError):
            for entry, snapshot, values in taken:  # put them back: written with the next flush
                entry.counts.update(snapshot)
                entry.values = {**values, **entry.values}
            raise

    # --- backpressure -------------------------------------------------------------------------
    async def poll(self) -> None:
        """Read the workers' lag (and model info) and move the target frame rate one step."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(contracts.WORKER_LAG_KEY)
        pipe.hmget(contracts.MODEL_INFO_KEY, ["crop_size", "crop_scale", "stream_shards"])
        lags, (crop_size, crop_scale, shards) = await pipe.execute()
        self.model_info(crop_size, crop_scale)
        self.check_shards(shards)
        now = time.time()
        worst = 0.0
        for value in lags.values():
            try:
                lag_ms, at = (float(x) for x in value.split())
            except ValueError:
                continue
            if now - at < LAG_FRESH_S:
                worst = max(worst, lag_ms)
        self.worker_lag_ms = worst
        self.step(worst, self._queue_depth())

    def model_info(self, crop_size: bytes | None, crop_scale: bytes | None) -> None:
        """Take the crop size and scale the workers published (unreadable values are ignored)."""
        with contextlib.suppress(TypeError, ValueError):
            size = int(crop_size)  # type: ignore[arg-type]
            if 1 <= size <= MAX_CROP_SIZE:
                self.crop_size = size
        with contextlib.suppress(TypeError, ValueError):
            scale = float(crop_scale)  # type: ignore[arg-type]
            if math.isfinite(scale) and 0 < scale <= 4:
                self.crop_scale = scale

    def check_shards(self, published: bytes | None) -> None:
        """Warn (once per change) when the workers' CLASSPULSE_STREAM_SHARDS differs from this
        gateway's: its frames would go to streams no worker reads."""
        with contextlib.suppress(TypeError, ValueError):
            theirs = int(published)  # type: ignore[arg-type]
            if theirs != self.workers_stream_shards and theirs != self.stream_shards:
                log.warning(
                    "the workers run with CLASSPULSE_STREAM_SHARDS=%d, this gateway with %d: "
                    "frames go to streams they do not read; give every process the same value",
                    theirs,
                    self.stream_shards,
                )
            self.workers_stream_shards = theirs

    def step(self, lag_ms: float, queue_depth: int) -> None:
        """One tick of AIMD: halve the rate under backlog, add 0.25 fps after calm ticks."""
        busy = lag_ms > self._high_ms or queue_depth > self._queue_high
        calm = lag_ms < self._low_ms and queue_depth < self._queue_high // 4
        self._calm = self._calm + 1 if calm else 0
        if self._hold > 0:
            self._hold -= 1
        elif busy and self.fps > MIN_FPS:
            self.reason = "backlog"
            self.fps = max(MIN_FPS, round(self.fps / 2, 2))
            self._hold = 2
        elif self._calm >= 3 and self.fps < self.base_fps:
            self.fps = min(self.base_fps, round(self.fps + 0.25, 2))
            self._calm, self._hold = 0, 1
            if self.fps >= self.base_fps:
                self.reason = "normal"

    async def trim_old_frames(self) -> int:
        """Delete frames older than twice the freshness limit from every frames stream (one
        script call per shard: shards may live on different Cluster nodes); how many went."""
        pipe = self._redis.pipeline(transaction=False)
        for stream in contracts.frames_streams(self.stream_shards):
            await self._trim(keys=[stream], args=[self._frames_keep_ms], client=pipe)
        return sum(int(n) for n in await pipe.execute())

    # --- the task -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-stats")

    async def stop(self) -> None:
        await stop_task(self._task)
        with contextlib.suppress(RedisError, OSError):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.flush()
                await self.poll()
                await self.trim_old_frames()
            except (RedisError, OSError) as exc:  # counters wait for the next tick
                log.warning("stream stats: Redis unavailable: %s", exc)


def parse(raw: Mapping[bytes | str, bytes | str]) -> dict[str, dict[str, Any]]:
    """The session hash as {student_id: {captured, received, accepted, processed, dropped,
    capture, detector_ms, fallback}} (the last three None until the page reported them)."""
    out: dict[str, dict[str, Any]] = {}
    for name_raw, value in raw.items():
        key = name_raw.decode() if isinstance(name_raw, bytes) else name_raw
        student_id, _, name = key.partition(":")
        entry = out.setdefault(
            student_id, {**dict.fromkeys(COUNTERS, 0), "dropped": {}, **dict.fromkeys(VALUES)}
        )
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        with contextlib.suppress(ValueError):
            if name.startswith("dropped."):
                entry["dropped"][name[len("dropped.") :]] = int(text)
            elif name in COUNTERS:
                entry[name] = int(text)
            elif name == "capture" and text in contracts.CAPTURE_MODES:
                entry[name] = text
            elif name == "detector_ms":
                entry[name] = float(text)
            elif name == "fallback" and text in contracts.CAPTURE_FALLBACKS:
                entry[name] = text
    return out

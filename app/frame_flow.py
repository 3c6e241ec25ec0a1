"""Per-student frame counters and the pipeline's backpressure, as one gateway process sees them.

Counters: each student socket counts into a small dict; one task flushes every socket's dict to
the session's Redis hash once a second with pipelined HINCRBYs (one round trip for the whole
process, not one per frame). The worker adds ``processed`` and its own drops to the same hash.

Backpressure: the workers report how old the frames they read were (``cp:worker_lag``); when
that age passes a fifth of the freshness limit, or this process's frame writer queues up, the
target frame rate for every page is halved (down to ``MIN_FPS``), and raised again in small
steps once the lag stays low (AIMD, as TCP does). Sockets send the new rate to their page with the next ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from classpulse import contracts
from classpulse.settings import Settings

log = logging.getLogger(__name__)

TICK_S = 1.0
MIN_FPS = 0.5
LAG_FRESH_S = 5.0  # a worker's lag report older than this is ignored (idle or dead worker)
COUNTERS = ("captured", "received", "accepted", "processed")
# One call per session hash instead of one HINCRBY per field: 300 students' counters are ~900
# increments a second, and redis-py spends ~10 µs packing each command on the event loop (11 ms
# per flush measured), which showed up in the frames' p99 ingest latency; one script call with
# the same increments as arguments costs a fraction of that.
INCR_SCRIPT = """
for i = 2, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


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
        self._open: dict[int, tuple[str, str, Counter[str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._incr = redis.register_script(INCR_SCRIPT) if redis is not None else None

    # --- counters -----------------------------------------------------------------------------
    def open(self, session_id: str, student_id: str) -> Counter[str]:
        """The counter dict a socket increments; flushed until ``close`` (which flushes it)."""
        counts: Counter[str] = Counter()
        self._open[id(counts)] = (session_id, student_id, counts)
        return counts

    async def close(self, counts: Counter[str]) -> None:
        entry = self._open.pop(id(counts), None)
        if entry:
            with contextlib.suppress(RedisError, OSError):
                await self._write([entry])

    async def flush(self) -> None:
        await self._write(list(self._open.values()))

    async def _write(self, entries: list[tuple[str, str, Counter[str]]]) -> None:
        taken: list[tuple[Counter[str], dict[str, int]]] = []
        by_session: dict[str, list[str | int]] = {}
        for session_id, student_id, counts in entries:
            if not counts:
                continue
            snapshot = dict(counts)
            counts.clear()  # cleared before the await: increments made meanwhile are kept
            taken.append((counts, snapshot))
            args = by_session.setdefault(
                contracts.stream_stats_key(session_id), [contracts.STATE_TTL_S]
            )
            for name, n in snapshot.items():
                args += (f"{student_id}:{name}", n)
        if not taken:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, args in by_session.items():
            await self._incr(keys=[key], args=args, client=pipe)
        try:
            await pipe.execute()
        except (RedisError, OSError):
            for counts, snapshot in taken:  # put them back: written with the next flush
                counts.update(snapshot)
            raise

    # --- backpressure -------------------------------------------------------------------------
    async def poll(self) -> None:
        """Read the workers' lag and move the target frame rate one step."""
        lags = await self._redis.hgetall(contracts.WORKER_LAG_KEY)
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

    # --- the task -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-stats")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.flush()
                await self.poll()
            except (RedisError, OSError) as exc:  # counters wait for the next tick
                log.warning("stream stats: Redis unavailable: %s", exc)


def parse(raw: Mapping[bytes | str, bytes | str]) -> dict[str, dict[str, Any]]:
    """The session hash as {student_id: {captured, received, accepted, processed, dropped}}."""
    out: dict[str, dict[str, Any]] = {}
    for field, value in raw.items():
        key = field.decode() if isinstance(field, bytes) else field
        student_id, _, name = key.partition(":")
        entry = out.setdefault(student_id, {**dict.fromkeys(COUNTERS, 0), "dropped": {}})
        if name.startswith("dropped."):
            entry["dropped"][name[len("dropped.") :]] = int(value)
        elif name in COUNTERS:
            entry[name] = int(value)
    return out

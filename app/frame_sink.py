"""The process-wide frame writer: a bounded queue drained by one task that pipelines XADDs.

Why one writer: redis-py's asyncio pool raises past 100 connections, so a thousand sockets each
awaiting its own XADD fail; and one pipelined round trip for up to 64 frames costs Redis about
as much as one XADD. Frames are real-time data: when the queue is full the frame is dropped and
counted, never queued without bound.

Linger: under load the writer starts at most one pipeline per ``LINGER_S`` and carries whatever
queued meanwhile. Without it, messages arriving a few milliseconds apart each paid their own
round trip (a loopback write that wakes Redis, an event-loop wake for the reply): a fifth of the
gateway's CPU per faces message at 200 students (py-spy, bench/load_suite.py). A frame arriving
after a quiet spell is written at once; under load one waits at most ``LINGER_S``. The ack still
means "stored in the stream": ``done`` is called after the pipeline's reply, per frame, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.tasks import stop_task
from classpulse import contracts

log = logging.getLogger(__name__)

BATCH = 64
QUEUE_SIZE = 2048  # ~2 s of 1,000 frames/s: past that Redis is too slow and frames go stale
DOWN_HOLD_S = 1.0  # after a failed write, refuse frames at once for this long
LINGER_S = 0.005  # at most one pipeline per this long under load (+≤ 5 ms before the ack)

# Called once per frame from the writer task: None when written, else the drop reason.
Done = Callable[[str | None], None]


@dataclass(slots=True)
class _Frame:
    stream: str  # the frames stream shard of the frame's session
    fields: dict[bytes, bytes]
    done: Done


class FrameSink:
    def __init__(
        self,
        redis: Redis,
        maxlen: int,
        on_depth: Callable[[int], None] = lambda _depth: None,
        shards: int = 1,
        attention: Callable[[], bool] = lambda: False,
        linger_s: float = LINGER_S,
    ):
        self._redis = redis
        self._maxlen = maxlen  # per stream shard
        # Frames go to the stream shard of their session (contracts.shard_of): one pipeline
        # still carries the whole batch, whatever shards its frames are for.
        self.shards = shards  # CLASSPULSE_STREAM_SHARDS: the workers read the same streams
        self._streams = contracts.frames_streams(self.shards)
        self._on_depth = on_depth
        # Whether the policy in force observes attention (PolicyCache): stamped into each entry
        # as the mode is, so the worker computes head pose only for frames taken while it was on.
        self._attention = attention
        self._queue: asyncio.Queue[_Frame] = asyncio.Queue(QUEUE_SIZE)
        self._down_until = 0.0
        self._linger_s = linger_s
        self._last_write = 0.0  # monotonic time the last pipeline started
        self.writes = 0  # pipelines sent (tests, benchmarks: frames per round trip)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="frame-writer")

    async def stop(self) -> None:
        await stop_task(self._task)

    def depth(self) -> int:
        return self._queue.qsize()

    def offer(
        self,
        session_id: str,
        student_id: str,
        seq: int,
        payload: bytes,
        mode: str,
        done: Done,
        kind: bytes = contracts.KIND_FRAME,
    ) -> str | None:
        """Queue one frame; return a drop reason now, or None and call done() once written.

        ``payload`` is a JPEG (``kind`` KIND_FRAME) or a validated edge-capture faces message
        (KIND_FACES); both go to the one frames stream. ``mode`` is the policy's emotion mode,
        stamped into the entry."""
        if time.monotonic() < self._down_until:
            return "redis_down"
        fields = {
            contracts.F_VERSION: b"1",
            contracts.F_SESSION: session_id.encode(),
            contracts.F_STUDENT: student_id.encode(),
            contracts.F_SEQ: str(seq).encode(),
            contracts.F_RECEIVED_MS: str(round(time.time() * 1000, 1)).encode(),
            contracts.F_EMOTION: b"0" if mode == "off" else b"1",
            contracts.F_MODE: mode.encode(),
            contracts.F_ATTENTION: b"1" if self._attention() else b"0",
            contracts.F_KIND: kind,
            contracts.F_FACES if kind == contracts.KIND_FACES else contracts.F_JPEG: payload,
        }
        stream = self._streams[contracts.shard_of(session_id, self.shards)]
        try:
            self._queue.put_nowait(_Frame(stream, fields, done))
        except asyncio.QueueFull:
            return "queue_full"
        return None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # The previous pipeline started less than the linger ago: frames are arriving
            # faster than one per linger, so wait out the rest and carry them in one round trip.
            wait = self._last_write + self._linger_s - time.monotonic()
            if wait > 0 and self._queue.qsize() < BATCH - 1:
                await asyncio.sleep(wait)
            # Whatever arrived meanwhile (and while the previous pipeline was in flight) goes in.
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._on_depth(self._queue.qsize())
            self._last_write = time.monotonic()
            await self._write(batch)

    async def _write(self, batch: list[_Frame]) -> None:
        self.writes += 1
        pipe = self._redis.pipeline(transaction=False)
        for frame in batch:
            pipe.xadd(frame.stream, frame.fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
        try:
            replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            log.warning(
                "frame writer: Redis write failed (%s); dropping %d frames", exc, len(batch)
            )
            self._down_until = time.monotonic() + DOWN_HOLD_S
            replies = [exc] * len(batch)
        for frame, reply in zip(batch, replies, strict=True):
            try:
                frame.done("redis_down" if isinstance(reply, Exception) else None)
            except Exception:  # a socket's callback must never stop the writer
                log.exception("frame writer: ack callback failed")

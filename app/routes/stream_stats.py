"""Per-student frame counters of a session: captured, sent, processed, dropped by reason; and
each page's capture mode and detector time (edge capture)."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app import pipeline_state
from app.deps import CurrentTeacher, DbSession, Res
from app.frame_flow import parse
from app.session_access import visible_session
from classpulse import contracts


class StudentStreamStats(BaseModel):
    captured: int  # frames the page captured (reported by the page; sent or skipped)
    received: int  # frames that reached the gateway ("sent")
    accepted: int  # frames written to the frames stream
    processed: int  # frames a worker analysed
    dropped: dict[str, int]  # reason -> frames (gateway and worker reasons)
    # What the page last reported (None until it did): "edge" (it runs the face detector and
    # sends faces messages) or "frames" (JPEG frames), and its detector's time per frame.
    capture: Literal["edge", "frames"] | None = None
    detector_ms: float | None = None
    # Why a page asked for edge capture sends frames instead: one of contracts.CAPTURE_FALLBACKS
    # (None: it didn't fall back).
    fallback: str | None = None


class DetectorsOut(BaseModel):
    # The face detector each side runs (pages and workers differ by default: README, "How it
    # works"): the model pages load for edge capture, and the one the workers published.
    device: str
    server: str | None = None  # None until a worker has published its models


class StreamStatsOut(BaseModel):
    session_id: uuid.UUID
    target_fps: float  # the rate pages are asked to send at now (lowered under backpressure)
    pressure: str  # "normal", or why the rate was lowered
    worker_lag_ms: float
    # The frames stream (shard) this session's frames travel on (CLASSPULSE_STREAM_SHARDS), and
    # its backlog: entries not yet delivered to a worker (None where Redis cannot tell).
    stream: str = contracts.FRAMES_STREAM
    stream_backlog: int | None = None
    students: dict[str, StudentStreamStats]
    detectors: DetectorsOut | None = None


router = APIRouter(prefix="/api/sessions", tags=["sessions"])
# The model pages load for edge capture, by name (fixed for the process, not per request).
_DEVICE_DETECTOR = PurePosixPath(contracts.EDGE_DETECTOR_URL).stem


@router.get("/{session_id}/stream-stats", response_model=StreamStatsOut)
async def stream_stats(
    session_id: str, user: CurrentTeacher, db: DbSession, res: Res
) -> StreamStatsOut:
    """Frame counters per student of one session (counted in Redis, flushed every second)."""
    session = await run_in_threadpool(visible_session, db, user, session_id)
    raw = await res.redis.hgetall(contracts.stream_stats_key(str(session.id)))
    shards = res.settings.stream_shards
    stream = contracts.frames_stream(contracts.shard_of(str(session.id), shards), shards)
    stats = res.frame_flow
    try:  # "<model name>@<version>", published by the workers at start (contracts.MODEL_INFO_KEY)
        published = await res.redis.hget(contracts.MODEL_INFO_KEY, "detector")
    except (RedisError, OSError):
        published = None
    if isinstance(published, bytes):
        published = published.decode(errors="replace")
    server = published.split("@")[0] if published else None
    return StreamStatsOut(
        session_id=session.id,
        target_fps=stats.fps,
        pressure=stats.reason,
        worker_lag_ms=stats.worker_lag_ms,
        stream=stream,
        stream_backlog=await _backlog(res, stream),
        students={k: StudentStreamStats(**v) for k, v in parse(raw).items()},
        detectors=DetectorsOut(device=_DEVICE_DETECTOR, server=server),
    )


async def _backlog(res: Res, stream: str) -> int | None:
    """Entries of the stream not yet delivered to the workers' group (XINFO GROUPS "lag")."""
    try:
        pair = [(stream, contracts.WORKER_GROUP)]
        (state,) = await pipeline_state.stream_groups(res.redis, pair)
    except (RedisError, OSError):
        return None  # Redis away
    return state.lag  # None: no stream or group yet (nothing sent)

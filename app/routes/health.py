"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app import pipeline_state
from app.deps import Res
from app.metrics import _Fixed
from app.resources import Resources

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]
    workers: int  # inference workers with a live heartbeat


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    """The process is alive (and its event loop answers)."""
    return {"status": "ok"}


def _db_ok(res: Resources) -> bool:
    try:
        with res.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not ready"; the reason is in the database's own logs
        return False


async def _redis_state(res: Resources) -> tuple[bool, int]:
    try:
        await res.redis.ping()
        return True, await pipeline_state.workers_alive(res.redis)
    except (RedisError, OSError):
        return False, 0


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {
            "model": ReadyOut,
            "description": "Not ready: the database, Redis or every worker is away",
        }
    },
)
async def readyz(res: Res) -> JSONResponse:
    """Ready when the database and Redis answer and at least one inference worker is alive."""
    try:
        db_ok, (redis_ok, workers) = await asyncio.wait_for(
            asyncio.gather(run_in_threadpool(_db_ok, res), _redis_state(res)), CHECK_TIMEOUT_S
        )
    except TimeoutError:
        db_ok, redis_ok, workers = False, False, 0
    ready = db_ok and redis_ok and workers > 0
    body = ReadyOut(
        status="ready" if ready else "not ready",
        database="ok" if db_ok else "unavailable",
        redis="ok" if redis_ok else "unavailable",
        workers=workers,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus' text format
async def metrics(res: Res) -> Response:
    body = await res.metrics.render(res.redis, res.settings.stream_shards)
    body += await stream_shard_metrics(res.redis, res.settings.stream_shards)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def stream_shard_metrics(redis: Redis, shards: int) -> bytes:
    """Length, pending and lag (entries not yet delivered to the group; Redis 7) of every frames
    and results stream shard, labelled by stream and consumer group: the backlog per shard, so
    a shard whose workers or aggregator are missing shows. Empty when Redis does not answer."""
    labels = ["stream", "group"]
    length = GaugeMetricFamily(
        "classpulse_stream_length", "Entries kept in each stream shard", labels=labels
    )
    pending = GaugeMetricFamily(
        "classpulse_stream_pending",
        "Entries read by a consumer and not yet acknowledged, per stream shard",
        labels=labels,
    )
    lag = GaugeMetricFamily(
        "classpulse_stream_lag",
        "Entries of the stream shard not yet delivered to its consumer group",
        labels=labels,
    )
    try:
        states = await pipeline_state.stream_groups(redis, pipeline_state.shard_groups(shards))
    except (RedisError, OSError):
        return b""
    for state in states:
        where = [state.stream, state.group]
        if state.length is None:
            continue  # not a stream
        length.add_metric(where, float(state.length))
        if state.pending is not None:
            pending.add_metric(where, float(state.pending))
        if state.lag is not None:  # Redis 7; unknown after some deletions
            lag.add_metric(where, float(state.lag))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Fixed([length, pending, lag]))
    return generate_latest(registry)

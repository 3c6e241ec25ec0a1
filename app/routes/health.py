"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app.deps import Res
from app.metrics import count_keys
from app.resources import Resources
from classpulse import contracts

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
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
        return True, await count_keys(res.redis, contracts.WORKER_HEARTBEAT_PREFIX + "*")
    except (RedisError, OSError):
        return False, 0


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the database, Redis or every worker is away"}},
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
    body = {
        "status": "ready" if ready else "not ready",
        "database": "ok" if db_ok else "unavailable",
        "redis": "ok" if redis_ok else "unavailable",
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus' text format
async def metrics(res: Res) -> Response:
    return Response(await res.metrics.render(res.redis), media_type=CONTENT_TYPE_LATEST)

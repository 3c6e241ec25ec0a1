"""System status for admins, from what the services already publish: worker and aggregator
heartbeats, stream backlogs and consumer-group lag, the pipeline counters (frames processed and
dropped by reason) over the last minutes, model versions, database and Redis health.

The counters in Redis (``cp:stats``) only ever grow; this route keeps a short history of them
(one sample per few seconds, an hour at most) so that any gateway can say what happened over
the last 1, 5 and 15 minutes, whichever gateway took the previous samples.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app import pipeline_state
from app.deps import CurrentAdmin, Res
from app.pipeline_state import as_text as _text
from app.resources import Resources
from classpulse import contracts

router = APIRouter(prefix="/api/admin", tags=["admin"])

CHECK_TIMEOUT_S = 3.0
SAMPLES_KEY = "cp:admin:status_samples"  # list of {"t": epoch s, "c": {counter: n}}, newest first
SAMPLE_EVERY_S = 5.0
SAMPLES_MAX = 720  # an hour at one sample per 5 s
WINDOWS_S = (60, 300, 900)


class ServiceBeat(BaseModel):
    name: str
    last_beat_s_ago: float | None  # seconds since its heartbeat was written
    lag_ms: float | None = None  # workers: how old the frames were when it last read


class StreamState(BaseModel):
    stream: str
    length: int
    group: str
    pending: int | None  # read by a consumer, not yet acknowledged
    lag: int | None  # entries not yet read by the group (Redis 7+; None where unknown)


class CounterWindow(BaseModel):
    window_s: int
    covered_s: float  # how much of the window the samples cover (less just after a start)
    counts: dict[str, int]  # counter -> increase over the covered time


class StatusOut(BaseModel):
    at: float
    database: str  # "ok" or "unavailable"
    database_ms: float | None
    schema_revision: str | None
    redis: str
    redis_ms: float | None
    workers: list[ServiceBeat]
    aggregators: list[ServiceBeat]
    streams: list[StreamState]
    worker_lag_ms: float  # the slowest worker's, as this gateway last read it
    target_fps: float
    pressure: str
    counters: dict[str, int]  # the pipeline's counters since they were last reset
    windows: list[CounterWindow]
    gateway_dropped: dict[str, int]  # this gateway's refusals since it started, by reason
    models: dict[str, str]  # what the workers published: versions, labels, crop size...
    execution_providers: list[str] | None  # None: the workers don't publish them


def _database(res: Resources) -> tuple[bool, float | None, str | None]:
    start = time.perf_counter()
    try:
        with res.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            took = (time.perf_counter() - start) * 1000
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return True, round(took, 1), str(revision) if revision else None
    except Exception:  # any failure means "unavailable"; the reason is in the database's logs
        return False, None, None


async def _beats(redis: Redis, prefix: str, lags: dict[str, float]) -> list[ServiceBeat]:
    beats = await pipeline_state.heartbeats(redis, prefix)
    return [
        ServiceBeat(name=name, last_beat_s_ago=ago, lag_ms=lags.get(name))
        for name, ago in beats.items()
    ]


def _ints(raw: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for key, value in raw.items():
        try:
            out[_text(key)] = int(float(_text(value)))
        except ValueError:
            continue  # not a counter
    return out


async def _windows(redis: Redis, now: float, counters: dict[str, int]) -> list[CounterWindow]:
    """Increase of every counter over each window, from the stored samples; stores this one."""
    samples = []
    for raw in await redis.lrange(SAMPLES_KEY, 0, -1):
        try:
            sample = json.loads(raw)
            samples.append((float(sample["t"]), dict(sample["c"])))
        except (ValueError, KeyError, TypeError):
            continue
    if not samples or now - samples[0][0] >= SAMPLE_EVERY_S:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.lpush(SAMPLES_KEY, json.dumps({"t": now, "c": counters}))
            pipe.ltrim(SAMPLES_KEY, 0, SAMPLES_MAX - 1)
            pipe.expire(SAMPLES_KEY, 2 * 3600)
            await pipe.execute()
    out = []
    for window in WINDOWS_S:
        inside = [s for s in samples if now - s[0] <= window]
        if not inside:
            out.append(CounterWindow(window_s=window, covered_s=0.0, counts={}))
            continue
        t0, base = inside[-1]  # the oldest sample inside the window
        counts = {}
        for name, value in counters.items():
            before = int(base.get(name, 0))
            # A counter that went down was reset (Redis lost its data): count from zero.
            counts[name] = value - before if value >= before else value
        out.append(CounterWindow(window_s=window, covered_s=round(now - t0, 1), counts=counts))
    return out


async def _redis_part(res: Resources) -> dict[str, Any]:
    redis, shards = res.redis, res.settings.stream_shards
    start = time.perf_counter()
    await redis.ping()
    took = round((time.perf_counter() - start) * 1000, 1)
    lags = {}
    for name, value in (await redis.hgetall(contracts.WORKER_LAG_KEY)).items():
        try:
            lags[_text(name)] = float(_text(value).split()[0])
        except (ValueError, IndexError):
            continue
    counters = _ints(await redis.hgetall(contracts.STATS_KEY))
    models = {
        _text(k): _text(v) for k, v in (await redis.hgetall(contracts.MODEL_INFO_KEY)).items()
    }
    providers = models.get("providers")
    return {
        "redis_ms": took,
        "workers": await _beats(redis, contracts.WORKER_HEARTBEAT_PREFIX, lags),
        "aggregators": await _beats(redis, contracts.AGGREGATOR_HEARTBEAT_PREFIX, {}),
        "streams": [
            StreamState(**{**asdict(state), "length": state.length or 0})
            for state in await pipeline_state.stream_groups(
                redis, pipeline_state.shard_groups(shards)
            )
        ],
        "counters": counters,
        "windows": await _windows(redis, time.time(), counters),
        "models": models,
        "execution_providers": providers.split(",") if providers else None,
    }


@router.get("/status", response_model=StatusOut)
async def system_status(_admin: CurrentAdmin, res: Res) -> StatusOut:
    """Workers alive, stream backlog and lag, frames processed and dropped over the last 1, 5
    and 15 minutes, model versions, database and Redis health (the admin page polls it)."""
    empty: dict[str, Any] = {
        "redis_ms": None,
        "workers": [],
        "aggregators": [],
        "streams": [],
        "counters": {},
        "windows": [],
        "models": {},
        "execution_providers": None,
    }

    async def redis_or_empty() -> tuple[bool, dict[str, Any]]:
        try:
            return True, await asyncio.wait_for(_redis_part(res), CHECK_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError):
            return False, empty

    async def database() -> tuple[bool, float | None, str | None]:
        try:
            return await asyncio.wait_for(run_in_threadpool(_database, res), CHECK_TIMEOUT_S)
        except TimeoutError:
            return False, None, None

    (db_ok, db_ms, revision), (redis_ok, part) = await asyncio.gather(database(), redis_or_empty())
    dropped = {k: int(v) for k, v in pipeline_state.gateway_drops(res.metrics).items()}
    flow = res.frame_flow
    return StatusOut(
        at=time.time(),
        database="ok" if db_ok else "unavailable",
        database_ms=db_ms,
        schema_revision=revision,
        redis="ok" if redis_ok else "unavailable",
        worker_lag_ms=flow.worker_lag_ms,
        target_fps=flow.fps,
        pressure=flow.reason,
        gateway_dropped=dropped,
        **part,
    )

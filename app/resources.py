"""What the gateway creates once at start-up and hands to routes through dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi.templating import Jinja2Templates
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.frame_flow import FrameFlow
from app.frame_sink import FrameSink
from app.hub import Hub
from app.metrics import Metrics
from app.policy_cache import PolicyCache
from app.ratelimit import FrameLimits
from classpulse.db import make_engine
from classpulse.settings import REPO_ROOT, Settings

STATIC_DIR = REPO_ROOT / "web" / "static"
TEMPLATES_DIR = REPO_ROOT / "web" / "templates"


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    redis: Redis
    hub: Hub
    sink: FrameSink
    metrics: Metrics
    templates: Jinja2Templates
    frame_limits: FrameLimits
    frame_flow: FrameFlow  # per-student frame counters and the target frame rate
    policy: PolicyCache  # the organisation's privacy policy, refreshed from Redis


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Create the engine, Redis client, hub and frame writer; close them in reverse order."""
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError(
            "the gateway needs CLASSPULSE_DATABASE_URL and CLASSPULSE_REDIS_URL "
            "(`classpulse run` sets them when it starts the embedded servers)"
        )
    engine = make_engine(settings.database_url, pool_size=10, max_overflow=10)
    # Timeouts: without them a Redis that stops answering would hang every request that touches it.
    # A blocking pool: the default pool raises "Too many connections" past 100 concurrent
    # commands (e.g. 300 sockets publishing presence when a class disconnects at once); this one
    # makes the 101st wait for a free connection instead.
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=64,
            timeout=5,
            socket_connect_timeout=3,
            socket_timeout=5,
            health_check_interval=30,
        )
    )
    metrics = Metrics()
    make_session = sessionmaker(engine, expire_on_commit=False)
    policy = PolicyCache(redis, make_session)
    sink = FrameSink(
        redis,
        settings.frames_stream_maxlen,
        on_depth=metrics.frame_queue.set,
        shards=settings.stream_shards,
        attention=lambda: policy.policy.attention,
    )
    frame_flow = FrameFlow(redis, settings, queue_depth=sink.depth)
    metrics.target_fps.set_function(lambda: frame_flow.fps)
    metrics.worker_lag.set_function(lambda: frame_flow.worker_lag_ms)
    hub = Hub(redis, on_drop=metrics.live_dropped.inc, mode=lambda: policy.policy)
    await policy.start()
    await hub.start()
    sink.start()
    frame_flow.start()
    try:
        yield Resources(
            settings=settings,
            engine=engine,
            sessionmaker=make_session,
            redis=redis,
            hub=hub,
            sink=sink,
            metrics=metrics,
            templates=Jinja2Templates(directory=TEMPLATES_DIR),
            # Burst of twice the frames a page may have in flight: a page that waited for acks
            # and then sends its window at once is not punished for it.
            frame_limits=FrameLimits(
                settings.frame_max_fps, max(2.0, 2.0 * settings.frames_in_flight)
            ),
            frame_flow=frame_flow,
            policy=policy,
        )
    finally:
        await frame_flow.stop()
        await sink.stop()
        await hub.stop()
        await policy.stop()
        await redis.aclose()
        engine.dispose()

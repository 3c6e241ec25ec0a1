"""The gateway's view of the organisation's policy: read per frame, so it must cost nothing.

PostgreSQL is the truth; at start-up the gateway loads it and writes the Redis mirror (so a
Redis that restarted without its data gets it back). A task then re-reads the mirror every
``REFRESH_S``: a change made through another gateway process reaches this one within that time,
and a change made through this one at once (``set``). The worker and the aggregator check the
mirror themselves per batch and apply the stricter mode, so a tightened policy never waits for
this cache; only relaxing it can lag by up to ``REFRESH_S`` in the other gateways.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.tasks import stop_task
from classpulse import contracts
from classpulse import policy as policy_mod
from classpulse.policy import Policy

log = logging.getLogger(__name__)
REFRESH_S = 0.5
RELOAD_EVERY = 60  # refreshes: PostgreSQL is re-read every 30 s, mending a mirror a write missed


class PolicyCache:
    def __init__(self, redis: Redis, make_session: sessionmaker[Session]) -> None:
        self._redis = redis
        self._make_session = make_session
        # Until the first load: the strictest mode, so nothing is inferred on a guess.
        self.policy = Policy(emotion_mode="off")
        self._task: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        return self.policy.emotion_mode

    async def start(self) -> None:
        try:
            await self.reload_from_db()
        except (RedisError, OSError, SQLAlchemyError) as exc:  # the refresh loop retries
            log.warning(
                "policy: initial load failed (%s); emotion inference off until it works", exc
            )
        self._task = asyncio.create_task(self._run(), name="policy-refresh")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def reload_from_db(self) -> Policy:
        """Load from PostgreSQL and re-write the Redis mirror (unless it holds a newer one)."""

        def load() -> tuple[Policy, int]:
            with self._make_session() as db:
                return policy_mod.load_stamped(db)

        policy, stamp = await run_in_threadpool(load)
        await self.set(policy, stamp)
        return policy

    async def set(self, policy: Policy, stamp: int) -> None:
        """Use ``policy`` from now on in this process and mirror it for the others."""
        args = policy_mod.mirror_args(policy, stamp)
        written = await self._redis.eval(policy_mod.MIRROR_SCRIPT, 1, contracts.POLICY_KEY, *args)
        if written:
            self.policy = policy
        else:  # another process mirrored a newer policy meanwhile: that one is in force
            await self.refresh()

    async def refresh(self) -> None:
        raw = await self._redis.hgetall(contracts.POLICY_KEY)
        mirrored = Policy.from_redis(raw)
        if mirrored is None:  # Redis lost it (restart, flush): PostgreSQL has it
            await self.reload_from_db()
        else:
            self.policy = mirrored

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(REFRESH_S)
            ticks += 1
            try:
                if ticks % RELOAD_EVERY == 0:
                    await self.reload_from_db()
                else:
                    await self.refresh()
            except (RedisError, OSError, SQLAlchemyError) as exc:
                # Keep the last known policy; frames fail anyway while Redis is down.
                log.debug("policy refresh failed: %s", exc)

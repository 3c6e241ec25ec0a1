"""Presence updates (connected, camera off, withdrawn...) written by the gateway for dashboards."""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import Redis

from classpulse import contracts


async def publish_presence(
    redis: Redis, session_id: str, student_id: str, presence: str, display_name: str | None
) -> None:
    """Publish a presence LiveUpdate to the session's channel and keep it for late dashboards.

    ``withdrawn`` also drops the student's last emotion update from the snapshot hash, so a
    dashboard that connects later is not shown the estimate of a student who withdrew, and flags
    the student for the workers, which then skip their frames still in the stream."""
    update = contracts.LiveUpdate(
        type="presence",
        session_id=session_id,
        student_id=student_id,
        t=time.time(),
        presence=presence,
        display_name=display_name,
    )
    # Every field, defaults included: LiveUpdate omits defaults, which would drop the very
    # "presence": "present" this message exists to carry.
    data = contracts.encoder.encode(msgspec.structs.asdict(update))
    async with redis.pipeline(transaction=False) as pipe:
        if presence == "withdrawn":
            pipe.hdel(contracts.snapshot_key(session_id), student_id)
            pipe.set(contracts.withdrawn_key(student_id), session_id, ex=contracts.STATE_TTL_S)
        pipe.hset(contracts.presence_key(session_id), student_id, data)
        pipe.expire(contracts.presence_key(session_id), contracts.STATE_TTL_S)
        pipe.publish(contracts.live_channel(session_id), data)
        await pipe.execute()


async def publish_session_ended(redis: Redis, session_id: str) -> None:
    """Tell every socket of the session (dashboards and students) that it has ended."""
    data = contracts.encoder.encode(
        {"type": "session_ended", "session_id": session_id, "t": time.time()}
    )
    await redis.publish(contracts.live_channel(session_id), data)

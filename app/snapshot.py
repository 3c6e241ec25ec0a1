"""The state a dashboard gets on connect: roster from PostgreSQL, latest updates from Redis."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from classpulse import contracts, views
from classpulse.db import Student
from classpulse.policy import Policy


async def model_labels(redis: Redis) -> list[str] | None:
    """The emotion model's label order as the worker published it; None if no worker has yet."""
    try:
        raw = await redis.hget(contracts.MODEL_INFO_KEY, "labels")
        labels = json.loads(raw) if raw else None
    except (RedisError, ValueError):
        return None
    return [str(x) for x in labels] if isinstance(labels, list) else None


async def model_calibration(redis: Redis) -> dict[str, Any] | None:
    """Whether the emotion model's confidence is calibrated, on what, and how right it was per
    confidence bin, as the worker published it (worker/classifier.py ``published``); None if no
    worker has yet. Pages word their "estimate" from this, never from a fixed sentence."""
    try:
        raw = await redis.hget(contracts.MODEL_INFO_KEY, "calibration")
        info = json.loads(raw) if raw else None
    except (RedisError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _roster(make_session: sessionmaker[Session], session_id: uuid.UUID) -> list[dict[str, Any]]:
    with make_session() as db:
        query = select(Student).where(Student.session_id == session_id)
        students = db.scalars(query.order_by(Student.joined_at, Student.id))
        return [
            {
                "student_id": str(s.id),
                "display_name": s.display_name,
                "joined_at": s.joined_at.isoformat(),
                "withdrawn": s.withdrawn_at is not None,
            }
            for s in students
        ]


def _latest(raw: dict[bytes, bytes], student_id: str) -> dict[str, Any] | None:
    data = raw.get(student_id.encode())
    if data is None:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


async def build_snapshot(
    redis: Redis,
    make_session: sessionmaker[Session],
    session_id: uuid.UUID,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """Snapshot message: every student of the roster with their latest presence and emotion,
    as the policy in force allows (no per-student emotion outside ``per_student``, none ever
    for a withdrawn student), and the class's latest mix where the aggregator publishes one."""
    policy = policy or Policy()
    students = await run_in_threadpool(_roster, make_session, session_id)
    sid = str(session_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(contracts.snapshot_key(sid))
        pipe.hgetall(contracts.presence_key(sid))
        pipe.get(contracts.class_live_key(sid))
        emotions, presence, class_raw = await pipe.execute()
    labels = await model_labels(redis) or []
    calibration = await model_calibration(redis)
    for s in students:
        s["presence"] = _latest(presence, s["student_id"])
        # A withdrawn student's last estimate is not shown, even if an update the aggregator
        # had in flight re-stored it after the withdrawal dropped it from the hash.
        latest = None if s["withdrawn"] else _latest(emotions, s["student_id"])
        s["emotion"] = views.update_view(latest, policy)
    class_now = None
    if class_raw and policy.emotion_mode == "aggregate_only":
        class_now = _latest({b"c": class_raw}, "c")
    return {
        "type": "snapshot",
        "session_id": sid,
        "labels": labels,
        "calibration": calibration,
        "students": students,
        "policy": {
            "emotion_mode": policy.emotion_mode,
            "min_group_size": policy.min_group_size,
            "attention": policy.attention,
        },
        "class": class_now,
    }

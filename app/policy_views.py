"""The gateway's side of the policy on reads: the class mix per bucket, the audit entries for
showing per-student data, and the policy message. What a view may show under each mode is
``classpulse.views``'s rule, which the aggregator applies too; reads apply it with the mode in
force now, so data stored under an earlier, looser policy is not shown under a stricter one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from classpulse import audit, contracts, views
from classpulse.db import ClassBucket, ClassSession, EmotionBucket, User
from classpulse.policy import Policy
from records.bucket_stats import shares


def record_view(
    db: Session, user: User, action: str, session_id: uuid.UUID, ip: str | None, **detail: Any
) -> None:
    """Audit a view of per-student data (``view.live``...) and commit."""
    audit.record(db, user, action, "session", session_id, detail, ip)
    db.commit()


def policy_message(policy: Policy) -> bytes:
    """What sockets of live sessions get when the policy changes (dashboards and students)."""
    return contracts.encoder.encode({"type": "policy", "t": time.time(), **policy.as_dict()})


async def announce_policy(redis: Redis, session_ids: list[uuid.UUID], policy: Policy) -> None:
    if not session_ids:
        return
    data = policy_message(policy)
    async with redis.pipeline(transaction=False) as pipe:
        for sid in session_ids:
            pipe.publish(contracts.live_channel(str(sid)), data)
        await pipe.execute()


def live_session_ids(db: Session) -> list[uuid.UUID]:
    return list(db.scalars(select(ClassSession.id).where(ClassSession.ended_at.is_(None))))


@dataclass
class ClassMix:
    bucket_start: datetime
    students: int  # students with a face in this bucket
    frames: int
    frames_with_face: int
    probs: dict[str, float] | None  # mean over faced, classified frames; None when suppressed
    suppressed: bool


def class_mix(db: Session, session_id: uuid.UUID, policy: Policy) -> list[ClassMix]:
    """The class's emotion mix per bucket (``class_buckets``); in ``aggregate_only`` nothing is
    shown for buckets where fewer than ``min_group_size`` students had a face, in ``off`` never.

    The number of students comes from the presence rows in ``emotion_buckets``, which every mode
    writes; the means are normalised by the summed probabilities (each classified frame adds 1),
    so frames seen with emotion inference off do not dilute them."""
    faced = (
        select(EmotionBucket.bucket_start, func.count().label("n"))
        .where(EmotionBucket.session_id == session_id, EmotionBucket.frames_with_face > 0)
        .group_by(EmotionBucket.bucket_start)
        .subquery()
    )
    query = (
        select(ClassBucket, func.coalesce(faced.c.n, 0))
        .outerjoin(faced, faced.c.bucket_start == ClassBucket.bucket_start)
        .where(ClassBucket.session_id == session_id)
        .order_by(ClassBucket.bucket_start)
    )
    out = []
    for bucket, students in db.execute(query):
        suppressed = not views.shows_class(policy, students)
        probs = None if suppressed else shares(bucket.prob_sums or {})
        out.append(
            ClassMix(
                bucket.bucket_start,
                students,
                bucket.frames,
                bucket.frames_with_face,
                probs,
                suppressed,
            )
        )
    return out

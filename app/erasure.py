"""Erasure on request: one student's data, or one session's students' data, deleted with an
audit entry that says what went (the entry itself stays: it is the record of the erasure), and
the live copies in Redis forgotten, the students' open sockets closed."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.presence import publish_session_ended
from classpulse import audit, contracts
from classpulse.db import (
    Alert,
    ClassBucket,
    ClassSession,
    ConsentRecord,
    EmotionBucket,
    Student,
    User,
    utcnow,
)


class NotFound(LookupError):
    """Nothing to erase: no such student or session."""


def _count(db: Session, model: Any, *where: Any) -> int:
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def forget_live(redis: Redis, session_id: str, student_ids: list[str]) -> None:
    """Close the students' sockets and drop what Redis keeps about them for dashboards."""
    async with redis.pipeline(transaction=False) as pipe:
        for sid in student_ids:
            notice = contracts.LiveUpdate(
                type="presence",
                session_id=session_id,
                student_id=sid,
                t=utcnow().timestamp(),
                presence="withdrawn",
            )
            pipe.publish(contracts.live_channel(session_id), contracts.encoder.encode(notice))
            pipe.hdel(contracts.snapshot_key(session_id), sid)
            pipe.hdel(contracts.presence_key(session_id), sid)
        await pipe.execute()
    stats_key = contracts.stream_stats_key(session_id)
    fields = [
        f
        async for f in redis.hscan_iter(stats_key)
        if f[0].split(b":", 1)[0].decode(errors="replace") in student_ids
    ]
    if fields:
        await redis.hdel(stats_key, *[f[0] for f in fields])


def erase_student(
    db: Session, actor: User, student_id: uuid.UUID, ip: str | None
) -> dict[str, Any]:
    """Delete all data of one student (name, consent records, buckets, alerts), audited."""
    student = db.get(Student, student_id)
    if student is None:
        raise NotFound("student not found")
    session_id = student.session_id
    # By (session_id, student_id): the buckets' primary key starts with the session.
    mine = (EmotionBucket.session_id == session_id, EmotionBucket.student_id == student_id)
    counts = {
        "emotion_buckets": _count(db, EmotionBucket, *mine),
        "consent_records": _count(db, ConsentRecord, ConsentRecord.student_id == student_id),
        "alerts": _count(db, Alert, Alert.student_id == student_id),
    }
    db.delete(student)  # the rows above go with it (ON DELETE CASCADE)
    audit.record(
        db,
        actor,
        "delete.student",
        "student",
        student_id,
        {"session_id": str(session_id), **counts},
        ip,
    )
    db.commit()
    return {"student_id": str(student_id), "session_id": str(session_id), "deleted": counts}


def erase_session_data(
    db: Session, actor: User, session_id: uuid.UUID, ip: str | None
) -> tuple[dict[str, Any], list[str], bool]:
    """Delete all data of a session's students (names, consent records, buckets, class buckets,
    alerts), audited; the session stays listed, ended. Returns the answer, the students' ids and
    whether the session was live."""
    session = db.get(ClassSession, session_id)
    if session is None:
        raise NotFound("session not found")
    sid = ClassSession.id == session_id
    students = [
        str(s) for s in db.scalars(select(Student.id).where(Student.session_id == session_id))
    ]
    counts = {
        "students": len(students),
        "emotion_buckets": _count(db, EmotionBucket, EmotionBucket.session_id == session_id),
        "class_buckets": _count(db, ClassBucket, ClassBucket.session_id == session_id),
        "consent_records": _count(db, ConsentRecord, ConsentRecord.session_id == session_id),
        "alerts": _count(db, Alert, Alert.session_id == session_id),
    }
    for model in (Alert, ClassBucket, EmotionBucket, ConsentRecord, Student):
        db.execute(delete(model).where(model.session_id == session_id))
    was_live = db.scalar(select(ClassSession.ended_at).where(sid)) is None
    if was_live:  # its students are gone: no one may stream into it any more
        session.ended_at = utcnow()
    audit.record(db, actor, "delete.session_data", "session", session_id, counts, ip)
    db.commit()
    return {"session_id": str(session_id), "deleted": counts}, students, was_live


async def forget_session(
    redis: Redis, session_id: str, students: list[str], was_live: bool
) -> None:
    """After erase_session_data: end the live session and drop its live copies."""
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        if was_live:
            await publish_session_ended(redis, session_id)
        await forget_live(redis, session_id, students)
        await redis.delete(
            contracts.snapshot_key(session_id),
            contracts.presence_key(session_id),
            contracts.class_live_key(session_id),
            contracts.stream_stats_key(session_id),
        )

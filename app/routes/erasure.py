"""Erasure on request (admins): find a student by session and name, see what an erasure would
delete, then erase one student's data or one session's students' data, through the audited
service in app/erasure.py."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, Res
from app.erasure import (
    NotFound,
    erase_session_data,
    erase_student,
    forget_live,
    forget_session,
)
from classpulse.db import (
    Alert,
    ClassBucket,
    ClassSession,
    ConsentRecord,
    EmotionBucket,
    Student,
    User,
)

router = APIRouter(prefix="/api/admin", tags=["privacy"])
FOUND_MAX = 100


class StudentFound(BaseModel):
    """A student (one join of a session) and what erasing them would delete."""

    id: uuid.UUID
    display_name: str
    joined_at: datetime
    withdrawn_at: datetime | None
    session_id: uuid.UUID
    session_title: str
    teacher_email: str
    emotion_buckets: int
    consent_records: int
    alerts: int


class SessionData(BaseModel):
    """What erasing a session's data would delete (the session itself stays, ended)."""

    session_id: uuid.UUID
    title: str
    ended_at: datetime | None
    students: int
    emotion_buckets: int
    class_buckets: int
    consent_records: int
    alerts: int


def _per_student(db: Session, model: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    query = (
        select(model.student_id, func.count())
        .where(model.student_id.in_(ids))
        .group_by(model.student_id)
    )
    return {sid: n for sid, n in db.execute(query).all()}


def _count(db: Session, model: Any, session_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(model).where(model.session_id == session_id)
    return db.scalar(query) or 0


@router.get("/students", response_model=list[StudentFound])
def find_students(
    _admin: CurrentAdmin,
    db: DbSession,
    session: Annotated[uuid.UUID | None, Query(description="the session's id")] = None,
    name: Annotated[
        str | None,
        # No control characters: PostgreSQL refuses NUL in text.
        Query(max_length=80, pattern=r"^[^\x00-\x1f\x7f]*$", description="part of the name"),
    ] = None,
) -> list[StudentFound]:
    """Students by session and part of their display name, newest first (at most 100), each
    with what erasing them would delete."""
    query = (
        select(Student, ClassSession.title, User.email)
        .join(ClassSession, ClassSession.id == Student.session_id)
        .join(User, User.id == ClassSession.owner_id)
        .order_by(Student.joined_at.desc())
        .limit(FOUND_MAX)
    )
    if session is not None:
        query = query.where(Student.session_id == session)
    if name:
        pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Student.display_name.ilike("%" + pattern + "%"))
    rows = db.execute(query).all()
    ids = [student.id for student, _, _ in rows]
    buckets = _per_student(db, EmotionBucket, ids)
    consents = _per_student(db, ConsentRecord, ids)
    alerts = _per_student(db, Alert, ids)
    return [
        StudentFound(
            id=st.id,
            display_name=st.display_name,
            joined_at=st.joined_at,
            withdrawn_at=st.withdrawn_at,
            session_id=st.session_id,
            session_title=title,
            teacher_email=email,
            emotion_buckets=buckets.get(st.id, 0),
            consent_records=consents.get(st.id, 0),
            alerts=alerts.get(st.id, 0),
        )
        for st, title, email in rows
    ]


@router.get("/sessions/{session_id}/data", response_model=SessionData)
def session_data(session_id: uuid.UUID, _admin: CurrentAdmin, db: DbSession) -> SessionData:
    """What ``DELETE`` of this path would delete: the session's students and their data."""
    session = db.get(ClassSession, session_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
    return SessionData(
        session_id=session.id,
        title=session.title,
        ended_at=session.ended_at,
        students=_count(db, Student, session_id),
        emotion_buckets=_count(db, EmotionBucket, session_id),
        class_buckets=_count(db, ClassBucket, session_id),
        consent_records=_count(db, ConsentRecord, session_id),
        alerts=_count(db, Alert, session_id),
    )


class StudentErased(BaseModel):
    student_id: str
    session_id: str
    deleted: dict[str, int]  # table -> rows deleted


class SessionDataErased(BaseModel):
    session_id: str
    deleted: dict[str, int]  # table -> rows deleted


@router.delete("/students/{student_id}", response_model=StudentErased)
async def delete_student(
    student_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of one student (name, consent records, buckets, alerts) on request."""
    try:
        out = await run_in_threadpool(erase_student, db, admin, student_id, client_address(request))
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        await forget_live(
            res.redis, out["session_id"], [out["student_id"]], res.settings.stream_shards
        )
    return out


@router.delete("/sessions/{session_id}/data", response_model=SessionDataErased)
async def delete_session_data(
    session_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of a session's students (names, consent records, buckets, class
    buckets, alerts); the session itself stays listed, ended, with nobody in it."""
    try:
        out, students, was_live = await run_in_threadpool(
            erase_session_data, db, admin, session_id, client_address(request)
        )
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    await forget_session(res.redis, str(session_id), students, was_live, res.settings.stream_shards)
    return out

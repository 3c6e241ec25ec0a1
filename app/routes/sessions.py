"""Class sessions: create, list, read, end, roster. A teacher sees only their own; admins all."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentTeacher, DbSession, RedisDep, SettingsDep
from app.presence import publish_session_ended
from app.session_access import visible_session
from app.text_rules import PlainText
from classpulse.db import ClassSession, Student, utcnow
from classpulse.policy import load as load_policy
from classpulse.settings import Settings
from records.reports import session_summaries

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

# No 0/O and 1/I: codes are read off a projector and typed by hand. 32**8 ≈ 10**12 codes.
JOIN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
JOIN_CODE_LENGTH = 8


class SessionIn(BaseModel):
    title: Annotated[str, Field(min_length=1, max_length=200), PlainText]


class SessionOut(BaseModel):
    id: uuid.UUID
    title: str
    join_code: str
    join_url: str
    created_at: datetime
    ended_at: datetime | None
    owner_id: int
    student_count: int
    # In the list only: duration_s, students_seen, frames, frames_with_face, dominant, alerts.
    summary: dict[str, Any] | None = None


class StudentOut(BaseModel):
    id: uuid.UUID
    display_name: str
    joined_at: datetime
    withdrawn_at: datetime | None


def new_join_code() -> str:
    return "".join(secrets.choice(JOIN_ALPHABET) for _ in range(JOIN_CODE_LENGTH))


def join_url(settings: Settings, request: Request, code: str) -> str:
    base = settings.public_url or str(request.base_url)
    return base.rstrip("/") + "/join/" + code


def _out(
    db: Session, settings: Settings, request: Request, s: ClassSession, count: int | None = None
) -> SessionOut:
    """``count``: the session's number of students when the caller counted them already."""
    if count is None:
        count = db.scalar(
            select(func.count()).select_from(Student).where(Student.session_id == s.id)
        )
    return SessionOut(
        id=s.id,
        title=s.title,
        join_code=s.join_code,
        join_url=join_url(settings, request, s.join_code),
        created_at=s.created_at,
        ended_at=s.ended_at,
        owner_id=s.owner_id,
        student_count=count or 0,
    )


@router.post("", response_model=SessionOut, status_code=status.HTTP_201_CREATED)
def create_session(
    body: SessionIn, user: CurrentTeacher, db: DbSession, settings: SettingsDep, request: Request
) -> SessionOut:
    """Start a class session with a fresh join code."""
    for _ in range(10):  # a collision is a one-in-10**12 event; retry rather than fail
        session = ClassSession(
            owner_id=user.id, title=body.title.strip(), join_code=new_join_code()
        )
        db.add(session)
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            continue
        return _out(db, settings, request, session)
    raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "could not allocate a join code")


@router.get("", response_model=list[SessionOut])
def list_sessions(
    user: CurrentTeacher,
    db: DbSession,
    settings: SettingsDep,
    request: Request,
    everyone: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[SessionOut]:
    """The caller's newest sessions (``limit``, default 100); an admin gets everyone's with
    `?all=1`. Counts and summary figures come from a few grouped queries, not one per session."""
    query = select(ClassSession).order_by(ClassSession.created_at.desc()).limit(limit)
    if not (everyone and user.role == "admin"):
        query = query.where(ClassSession.owner_id == user.id)
    found = list(db.scalars(query))
    counts: dict = (
        dict(
            db.execute(
                select(Student.session_id, func.count())
                .where(Student.session_id.in_([s.id for s in found]))
                .group_by(Student.session_id)
            ).all()
        )
        if found
        else {}
    )
    figures = session_summaries(db, found, load_policy(db))
    return [
        _out(db, settings, request, s, counts.get(s.id, 0)).model_copy(
            update={"summary": figures.get(s.id)}
        )
        for s in found
    ]


@router.get("/{session_id}", response_model=SessionOut)
def get_session(
    session_id: str, user: CurrentTeacher, db: DbSession, settings: SettingsDep, request: Request
) -> SessionOut:
    return _out(db, settings, request, visible_session(db, user, session_id))


@router.post("/{session_id}/end", response_model=SessionOut)
async def end_session(
    session_id: str,
    user: CurrentTeacher,
    db: DbSession,
    settings: SettingsDep,
    request: Request,
    redis: RedisDep,
) -> SessionOut:
    """End the session: no more joins or frames; connected students are told and disconnected."""

    def end() -> SessionOut:
        session = visible_session(db, user, session_id)
        if session.ended_at is None:
            session.ended_at = utcnow()
            db.commit()
        return _out(db, settings, request, session)

    out = await run_in_threadpool(end)
    await publish_session_ended(redis, str(out.id))
    return out


@router.get("/{session_id}/students", response_model=list[StudentOut])
def list_students(session_id: str, user: CurrentTeacher, db: DbSession) -> list[StudentOut]:
    """The roster, in joining order."""
    session = visible_session(db, user, session_id)
    return [StudentOut.model_validate(s, from_attributes=True) for s in roster(db, session.id)]


def roster(db: Session, session_id: uuid.UUID) -> list[Student]:
    query = select(Student).where(Student.session_id == session_id)
    return list(db.scalars(query.order_by(Student.joined_at, Student.id)))

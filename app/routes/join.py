"""The join flow: join code → consent notice → display name → a short-lived student token."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import client_address, create_student_token
from app.consent import CONSENT_TEXT, CONSENT_VERSION
from app.deps import CurrentStudent, DbSession, RedisDep, Res
from app.presence import publish_presence
from app.ratelimit import Limit, Refused, address_key, refund, reserve
from app.resources import Resources
from app.students import withdraw_student
from app.text_rules import DisplayNameError, clean_display_name
from classpulse.db import ClassSession, ConsentRecord, Student, User, utcnow
from classpulse.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["join"])
JoinCode = Annotated[str, Path(min_length=1, max_length=64)]


class JoinInfo(BaseModel):
    session_title: str
    teacher: str
    consent_version: str
    consent_text: str
    emotion_mode: str  # the organisation's policy now: per_student | aggregate_only | off
    # Whether head orientation ("facing the screen") is observed now: the notice's words on it
    # apply only then, and the join page can say so before the student answers.
    attention: bool = False


class JoinIn(BaseModel):
    display_name: str = Field(max_length=200)  # checked again after stripping
    # True: accepted (with consent_version); False: declined, attend without analysis.
    consent: bool | None = None
    consent_version: str | None = None


class JoinOut(BaseModel):
    student_id: uuid.UUID
    token: str
    session_id: uuid.UUID
    session_title: str
    expires_in: int
    ws_url: str = "/ws/student"
    analysis: bool  # False: consent declined, frames are refused, presence only


# Unknown and ended codes get the same answer: someone guessing codes cannot tell a code that
# was used once from one that never was. A student whose class ended while their page is open
# learns it from their socket ("session ended"), which needs their token, not from this answer.
NO_OPEN_SESSION = (
    "no open class session has this join code: check the link with your teacher"
    " (a class that has ended can't be joined)"
)


def open_session(db: Session, code: str) -> ClassSession:
    """The open session of a join code; 404 for an unknown code and an ended session alike."""
    code = code.strip().upper()
    if not (code.isascii() and code.isalnum()):  # join codes are letters and digits only
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_OPEN_SESSION)
    session = db.scalar(select(ClassSession).where(ClassSession.join_code == code))
    if session is None or session.ended_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_OPEN_SESSION)
    return session


def _too_many(refused: Refused, res: Resources) -> HTTPException:
    res.metrics.rate_limited.labels(refused.limit.metric).inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        refused.limit.message,
        headers={"Retry-After": str(refused.retry_after)},
    )


def _unavailable() -> HTTPException:
    return HTTPException(503, "joining is unavailable: Redis cannot be reached")


async def _checked_code(
    request: Request, res: Resources, db: Session, code: str, *also: Limit
) -> ClassSession:
    """The open session of ``code``, with the per-address limit on wrong codes (and ``also``)
    applied: the lookup counts as a failure until the code turned out right, so a valid code
    (a student's join, a teacher reloading the join page) never counts, and 1,000 guesses
    from one address are refused after ``join_failures_per_minute_per_address``."""
    address = address_key(client_address(request))
    failures = Limit(
        f"cp:join:fail:{address}",
        res.settings.join_failures_per_minute_per_address,
        "join_address",
        "too many wrong or ended join codes from this address; wait a minute and try again",
    )
    try:
        await reserve(res.redis, failures, *also)
    except Refused as refused:
        raise _too_many(refused, res) from None
    except RedisError as exc:
        raise _unavailable() from exc
    session = await run_in_threadpool(open_session, db, code)  # 404: stays counted
    try:
        await refund(res.redis, failures.key)
    except RedisError as exc:  # one valid lookup stays counted: harmless
        log.warning("join: cannot take back a valid code's count: %s", exc)
    return session


@router.get("/join/{code}", response_model=JoinInfo)
async def join_info(code: JoinCode, request: Request, db: DbSession, res: Res) -> JoinInfo:
    """What a student reads before joining: the class, its teacher and the consent notice.
    Unknown and ended codes are answered alike (404); wrong codes count against the address."""
    session = await _checked_code(request, res, db, code)
    owner = await run_in_threadpool(db.get, User, session.owner_id)
    return JoinInfo(
        session_title=session.title,
        teacher=owner.display_name if owner else "",
        consent_version=CONSENT_VERSION,
        consent_text=CONSENT_TEXT,
        emotion_mode=res.policy.mode,
        attention=res.policy.policy.attention,
    )


@router.post("/join/{code}", response_model=JoinOut, status_code=status.HTTP_201_CREATED)
async def join(
    code: JoinCode,
    body: JoinIn,
    request: Request,
    db: DbSession,
    res: Res,
) -> JoinOut:
    """Join with a display name: ``consent: true`` after reading the notice, or ``false`` to
    attend without analysis. Either answer is recorded (a consent record per join).

    Limits (per minute, in Redis, across gateways): wrong or ended codes per address; every join
    per address (sized for a whole school behind one address); join attempts per session (twice
    the session's student cap unless set), and the cap itself. A reconnecting page never joins again:
    its socket reuses the token it has."""
    settings = res.settings
    address = address_key(client_address(request))
    flood = Limit(
        f"cp:join:address:{address}",
        settings.joins_per_minute_per_address,
        "join_address",
        "too many joins from this address; wait a minute and try again",
    )
    session = await _checked_code(request, res, db, code, flood)
    per_session = settings.joins_per_minute_per_session or 2 * settings.max_students_per_session
    try:
        await reserve(
            res.redis,
            Limit(
                f"cp:join:session:{session.id}",
                per_session,
                "join_code",
                "too many joins to this class session; wait a minute and try again",
            ),
        )
    except Refused as refused:
        raise _too_many(refused, res) from None
    except RedisError as exc:
        raise _unavailable() from exc
    return await run_in_threadpool(_join, db, settings, code, body)


def _join(db: Session, settings: Settings, code: str, body: JoinIn) -> JoinOut:
    if body.consent is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            'consent is required: read the notice, then send "consent": true to join with'
            ' analysis or "consent": false to attend without it',
        )
    if body.consent and body.consent_version not in (None, CONSENT_VERSION):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the consent notice has changed (now version {CONSENT_VERSION}): read it again",
        )
    try:
        name = clean_display_name(body.display_name)
    except DisplayNameError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    session = open_session(db, code)
    # The session row locked: concurrent joins are counted one after another against the cap.
    db.execute(select(ClassSession.id).where(ClassSession.id == session.id).with_for_update())
    joined = db.scalar(
        select(func.count()).select_from(Student).where(Student.session_id == session.id)
    )
    if (joined or 0) >= settings.max_students_per_session:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this class session is full ({settings.max_students_per_session} students);"
            " ask the teacher",
        )
    now = utcnow()
    student = Student(
        session_id=session.id,
        display_name=name,
        consent_version=CONSENT_VERSION if body.consent else None,
        consent_at=now if body.consent else None,
    )
    db.add(student)
    db.flush()
    db.add(
        ConsentRecord(
            session_id=session.id,
            student_id=student.id,
            action="accepted" if body.consent else "declined",
            consent_version=CONSENT_VERSION,  # the text that was shown, accepted or not
            at=now,
        )
    )
    db.commit()
    return JoinOut(
        student_id=student.id,
        token=create_student_token(settings, student.id, session.id),
        session_id=session.id,
        session_title=session.title,
        expires_in=settings.student_token_ttl_s,
        analysis=bool(body.consent),
    )


@router.post("/student/withdraw", status_code=status.HTTP_204_NO_CONTENT)
async def withdraw(claims: CurrentStudent, db: DbSession, redis: RedisDep) -> None:
    """Stop taking part: recorded at once; the student's sockets are closed by the live update."""
    student = await run_in_threadpool(withdraw_student, db, claims.student_id, claims.session_id)
    if student is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown student")
    await publish_presence(
        redis, str(claims.session_id), str(claims.student_id), "withdrawn", student.display_name
    )

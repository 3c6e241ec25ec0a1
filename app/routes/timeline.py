"""Per-student emotion history of a session, from the aggregator's time buckets in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import client_address
from app.deps import CurrentTeacher, DbSession, RedisDep, Res, SettingsDep
from app.policy_views import record_view
from app.session_access import visible_session
from app.snapshot import model_labels
from classpulse import views
from classpulse.db import EmotionBucket, Student
from classpulse.policy import Policy
from records.bucket_stats import dominant, mean_probs

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class BucketOut(BaseModel):
    student_id: uuid.UUID
    display_name: str
    bucket_start: datetime
    frames: int
    frames_with_face: int
    probs: dict[str, float]  # mean probability over the frames with a face
    dominant: str | None


class TimelineOut(BaseModel):
    session_id: uuid.UUID
    bucket_seconds: int
    labels: list[str]
    buckets: list[BucketOut]


def _rows(
    db: Session, session_id: uuid.UUID, since: datetime | None
) -> list[tuple[EmotionBucket, str]]:
    query = (
        select(EmotionBucket, Student.display_name)
        .join(Student, Student.id == EmotionBucket.student_id)
        .where(EmotionBucket.session_id == session_id)
        .order_by(EmotionBucket.bucket_start, Student.display_name, Student.id)
    )
    if since is not None:
        query = query.where(EmotionBucket.bucket_start >= since)
    return [(b, name) for b, name in db.execute(query)]


def bucket_out(
    bucket: EmotionBucket, display_name: str, labels: list[str], policy: Policy
) -> BucketOut:
    """One student's stored bucket as the timeline shows it under the policy in force."""
    faced = bucket.frames_with_face
    probs = mean_probs(bucket.prob_sums or {}, faced, labels, digits=None) or {}
    point = {
        "student_id": bucket.student_id,
        "display_name": display_name,
        "bucket_start": bucket.bucket_start,
        "frames": bucket.frames,
        "frames_with_face": faced,
        "probs": probs,
        "dominant": dominant(probs),
    }
    return BucketOut(**views.student_view("timeline", point, policy))


@router.get("/{session_id}/timeline", response_model=TimelineOut)
async def timeline(
    session_id: str,
    user: CurrentTeacher,
    db: DbSession,
    settings: SettingsDep,
    redis: RedisDep,
    res: Res,
    request: Request,
    since: datetime | None = None,
) -> TimelineOut:
    """Time buckets per student, ordered by time then student; `?since=ISO` for the recent part.

    Outside ``per_student`` mode the buckets carry presence only (frame counts), whatever an
    earlier policy stored; in ``per_student`` mode the read is audited (``view.timeline``)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a naive time from a client means UTC
    policy = res.policy.policy
    session = await run_in_threadpool(visible_session, db, user, session_id)
    rows = await run_in_threadpool(_rows, db, session.id, since)
    labels = await model_labels(redis)
    if labels is None:
        labels = sorted({k for b, _ in rows for k in (b.prob_sums or {})})
    buckets = [bucket_out(b, name, labels, policy) for b, name in rows]
    if views.shows_students(policy):
        ip = client_address(request)
        await run_in_threadpool(record_view, db, user, "view.timeline", session.id, ip)
    return TimelineOut(
        session_id=session.id,
        bucket_seconds=settings.bucket_seconds,
        labels=labels,
        buckets=buckets,
    )

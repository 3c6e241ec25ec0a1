"""``GET /api/student/me``: what the service holds about the calling student, for their page.

The same policy applies as for the teacher: outside ``per_student`` no per-student emotion is
shown (none is stored either, but buckets kept under an earlier policy are hidden too); their
attention ("facing the screen") only while the policy observes it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentStudent, DbSession, Res
from app.snapshot import model_labels
from classpulse import views
from classpulse.db import ClassSession, ConsentRecord, EmotionBucket, Student
from records.bucket_stats import DIGITS, dominant, facing_share, shares, summed, total_facing_share

router = APIRouter(prefix="/api/student", tags=["join"])


class ConsentEvent(BaseModel):
    action: str
    consent_version: str | None
    at: datetime


class SelfBucket(BaseModel):
    bucket_start: datetime
    frames: int
    frames_with_face: int
    dominant: str | None = None  # only in per_student mode
    # Only while the policy observes attention (head orientation; docs/attention.md).
    attention_frames: int | None = None
    facing_frames: int | None = None
    facing_share: float | None = None


class SelfView(BaseModel):
    student_id: uuid.UUID
    display_name: str
    session_title: str
    session_ended: bool
    consent: str  # accepted | declined | withdrawn
    consent_version: str | None
    consent_history: list[ConsentEvent]
    policy: dict[str, Any]  # emotion_mode, min_group_size and attention in force now
    bucket_seconds: int
    frames: int  # analysed so far, over the whole session
    frames_with_face: int
    probs: dict[str, float] | None  # mean over the session; None outside per_student
    facing_share: float | None = None  # over the session; None while attention is off
    buckets: list[SelfBucket]


def _mean(buckets: list[EmotionBucket], labels: list[str]) -> dict[str, float] | None:
    sums = summed(b.prob_sums for b in buckets)
    return shares(sums, labels or sorted(sums), DIGITS)


@router.get("/me", response_model=SelfView)
async def me(claims: CurrentStudent, db: DbSession, res: Res) -> SelfView:
    """The student's consent state and, as the policy allows, their data so far."""
    policy = res.policy.policy
    labels = await model_labels(res.redis) or []

    def read() -> SelfView:
        student = db.get(Student, claims.student_id)
        if student is None or student.session_id != claims.session_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown student (deleted on request?)")
        session = db.get(ClassSession, student.session_id)
        records = list(
            db.scalars(
                select(ConsentRecord)
                .where(ConsentRecord.student_id == student.id)
                .order_by(ConsentRecord.at, ConsentRecord.id)
            )
        )
        buckets = list(
            db.scalars(
                select(EmotionBucket)
                .where(
                    EmotionBucket.session_id == student.session_id,
                    EmotionBucket.student_id == student.id,
                )  # the primary key's prefix: an index scan, not the whole table
                .order_by(EmotionBucket.bucket_start)
            )
        )
        if student.withdrawn_at is not None:
            consent = "withdrawn"
        else:
            consent = "accepted" if student.consent_version else "declined"
        shown = []
        for b in buckets:
            mean = _mean([b], labels)
            bucket = {
                "bucket_start": b.bucket_start,
                "frames": b.frames,
                "frames_with_face": b.frames_with_face,
                "dominant": dominant(mean),
                "attention_frames": b.attention_frames,
                "facing_frames": b.facing_frames,
                "facing_share": facing_share(b.attention_frames, b.facing_frames),
            }
            shown.append(SelfBucket(**views.student_view("bucket", bucket, policy)))
        own: dict[str, Any] = {
            "probs": _mean(buckets, labels),
            "facing_share": total_facing_share(buckets),
        }
        own = views.student_view("self", own, policy)
        return SelfView(
            student_id=student.id,
            display_name=student.display_name,
            session_title=session.title if session else "",
            session_ended=bool(session and session.ended_at),
            consent=consent,
            consent_version=student.consent_version,
            consent_history=[
                ConsentEvent(action=r.action, consent_version=r.consent_version, at=r.at)
                for r in records
            ],
            policy={
                "emotion_mode": policy.emotion_mode,
                "min_group_size": policy.min_group_size,
                "attention": policy.attention,
            },
            bucket_seconds=res.settings.bucket_seconds,
            frames=sum(b.frames for b in buckets),
            frames_with_face=sum(b.frames_with_face for b in buckets),
            probs=own["probs"],
            facing_share=own["facing_share"],
            buckets=shown,
        )

    return await run_in_threadpool(read)

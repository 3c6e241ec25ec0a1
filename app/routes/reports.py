"""A session's history, report (CSV, JSON, PDF), alerts and alert rules. Owner or admin only.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so the PDF (matplotlib, a few
hundred milliseconds of CPU) never blocks the event loop. Every report and every per-student
history read is written to the audit log before the data is returned.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select

from app.auth import client_address
from app.deps import CurrentTeacher, DbSession, RedisDep, SettingsDep
from app.session_access import visible_session
from app.snapshot import model_calibration
from classpulse import alert_rules, audit, views
from classpulse import policy as org_policy
from classpulse.db import Alert, Student
from records import exports, reports

router = APIRouter(prefix="/api/sessions", tags=["reports"])
Number = int | float  # as stored: an integer stays one in the JSON


# --- what the JSON routes answer (records.reports builds it; the pages read these shapes) ------
class ReportSession(BaseModel):
    id: str
    title: str
    owner: str  # the owner's email
    created_at: str
    ended_at: str | None


class ShownPolicy(BaseModel):
    emotion_mode: str
    min_group_size: int
    retention_days: int
    attention: bool  # head orientation observed: rows carry the attention figures


class ReportRow(BaseModel):
    """One bucket of the class (``scope`` "class") or of one student."""

    scope: Literal["class", "student"]
    student_id: str | None
    display_name: str | None
    bucket_start: str
    frames: int
    frames_with_face: int
    students_present: int
    probs: dict[str, float] | None  # None: no faced frame, withheld, or emotions off
    dominant: str | None
    suppressed: bool  # withheld for a group below min_group_size
    # Frames whose head orientation was observed, of those facing the screen, and their share
    # (None: attention off, or nothing observed in the bucket).
    attention_frames: int | None = None
    facing_frames: int | None = None
    facing_share: float | None = None


class AlertOut(BaseModel):
    id: int
    rule: str
    message: str
    student_id: str | None
    display_name: str | None
    started_at: str
    ended_at: str | None
    detail: dict[str, Any]


class ReportSummary(BaseModel):
    duration_s: Number
    students_joined: int
    students_seen: int
    frames: int
    frames_with_face: int
    buckets: int
    peak_present: int
    mean_present: Number
    emotion_shares: dict[str, float] | None  # frame-weighted means over the shown buckets
    negative_share: float | None
    dominant: str | None
    suppressed_buckets: int
    alerts: int
    facing_share: float | None = None  # of the class's observed frames; None: attention off


class RosterEntry(BaseModel):
    student_id: str
    display_name: str


class HistoryOut(BaseModel):
    session: ReportSession
    policy: ShownPolicy
    bucket_seconds: int
    labels: list[str]
    summary: ReportSummary
    alerts: list[AlertOut]
    students: list[RosterEntry]  # per_student mode or attention on
    rows: list[ReportRow]  # the class's (students: the drill-down)
    calibration: dict[str, Any] | None  # the serving model's, as the worker published it


class StudentHistoryOut(BaseModel):
    student_id: str
    display_name: str
    rows: list[ReportRow]


class NegativeShareRule(BaseModel):
    enabled: bool
    threshold: Number
    sustain_s: Number


class NoFaceRule(BaseModel):
    enabled: bool
    sustain_s: Number


class StalledRule(BaseModel):
    enabled: bool
    stall_s: Number


class AlertRulesOut(BaseModel):
    """The session's rules: classpulse.alert_rules.DEFAULT_RULES with its overrides."""

    negative_share: NegativeShareRule
    no_face: NoFaceRule
    stalled: StalledRule


@router.get("/{session_id}/history", response_model=HistoryOut)
def history(
    session_id: str, user: CurrentTeacher, db: DbSession, settings: SettingsDep, redis: RedisDep
) -> dict[str, Any]:
    """Class mix and presence per bucket, summary and alerts; the roster in per_student mode;
    whether the model serving now is calibrated (the page words its estimates from it)."""
    session = visible_session(db, user, session_id)
    report = reports.build_report(db, session, org_policy.load(db), settings.bucket_seconds)
    data = report.as_json()
    data["rows"] = report.row_dicts(report.class_rows)  # students: see the drill-down
    data["calibration"] = anyio.from_thread.run(model_calibration, redis)
    return data


@router.get("/{session_id}/history/students/{student_id}", response_model=StudentHistoryOut)
def student_history(
    session_id: str, student_id: uuid.UUID, user: CurrentTeacher, db: DbSession, request: Request
) -> dict[str, Any]:
    """One student's timeline: emotions under per_student, attention while it is observed
    (refused when the policy shows neither; audited as view.history)."""
    session = visible_session(db, user, session_id)
    student = db.get(Student, student_id)
    if student is None or student.session_id != session.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "student not found in this session")
    policy = org_policy.load(db)
    if not views.shows_student_data(policy):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "the organisation's policy keeps no per-student emotions"
        )
    rows = reports.student_series(db, session.id, student.id, policy)
    audit.record(
        db,
        user,
        "view.history",
        "student",
        student.id,
        {"session_id": str(session.id)},
        client_address(request),
    )
    db.commit()
    return {"student_id": str(student.id), "display_name": student.display_name, "rows": rows}


@router.get(
    "/{session_id}/report",
    responses={200: exports.FILE_RESPONSE},
)
def report(
    session_id: str,
    user: CurrentTeacher,
    db: DbSession,
    settings: SettingsDep,
    request: Request,
    fmt: Annotated[Literal["csv", "json", "pdf"], Query(alias="format")] = "json",
) -> Response:
    """The session report as CSV (one row per class-or-student and bucket), JSON or PDF."""
    session = visible_session(db, user, session_id)
    policy = org_policy.load(db)
    built = reports.build_report(db, session, policy, settings.bucket_seconds)
    body = exports.report_file(built, fmt)
    exports.record(
        db,
        user,
        "session",
        session.id,
        {"format": fmt, "mode": policy.emotion_mode, "attention": policy.attention},
        client_address(request),
    )
    name = f"classpulse-{session.created_at:%Y%m%d}-{str(session.id)[:8]}.{fmt}"
    return Response(
        body,
        media_type=reports.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{session_id}/alerts", response_model=list[AlertOut])
def list_alerts(
    session_id: str,
    user: CurrentTeacher,
    db: DbSession,
    only_open: Annotated[bool, Query(alias="open")] = False,
) -> list[dict[str, Any]]:
    """The session's alerts, oldest first; `?open=1` for those still open."""
    session = visible_session(db, user, session_id)
    query = (
        select(Alert, Student.display_name)
        .outerjoin(Student, Student.id == Alert.student_id)
        .where(Alert.session_id == session.id)
        .order_by(Alert.started_at, Alert.id)
    )
    if only_open:
        query = query.where(Alert.ended_at.is_(None))
    return [reports.alert_dict(a, name) for a, name in db.execute(query)]


@router.get("/{session_id}/alert-rules", response_model=AlertRulesOut)
def get_alert_rules(session_id: str, user: CurrentTeacher, db: DbSession) -> dict[str, Any]:
    """The session's rules: defaults with its overrides applied."""
    session = visible_session(db, user, session_id)
    return alert_rules.merged(session.alert_rules)


@router.put("/{session_id}/alert-rules", response_model=AlertRulesOut)
def put_alert_rules(
    session_id: str, user: CurrentTeacher, db: DbSession, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Change some rules' parameters, e.g. {"negative_share": {"threshold": 0.5}}."""
    session = visible_session(db, user, session_id)
    try:
        changes = alert_rules.validate(body)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    stored = {k: dict(v) for k, v in (session.alert_rules or {}).items()}
    for name, params in changes.items():
        stored.setdefault(name, {}).update(params)
    session.alert_rules = stored  # a new dict, so SQLAlchemy sees the JSONB change
    db.commit()
    return alert_rules.merged(stored)

"""Admin privacy controls: the organisation's policy, the audit log, deletion on request."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentAdmin, DbSession, Res
from app.presence import publish_session_ended
from app.privacy import announce_policy, live_session_ids
from classpulse import audit, contracts
from classpulse import policy as policy_mod
from classpulse.csvsafe import safe_row
from classpulse.db import (
    Alert,
    AuditEntry,
    ClassBucket,
    ClassSession,
    ConsentRecord,
    EmotionBucket,
    OrgPolicy,
    Student,
    User,
    utcnow,
)
from classpulse.policy import Policy, PolicyError

router = APIRouter(prefix="/api/admin", tags=["privacy"])

AUDIT_PAGE_MAX = 1000
AUDIT_CSV_MAX = 100_000


class PolicyOut(BaseModel):
    emotion_mode: str
    min_group_size: int
    retention_days: int
    updated_at: datetime | None = None
    updated_by: str | None = None


class PolicyIn(BaseModel):
    """Fields left out keep their current value."""

    emotion_mode: str | None = None
    min_group_size: int | None = None
    retention_days: int | None = None


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _policy_out(db: Session) -> PolicyOut:
    row = db.get(OrgPolicy, 1)
    current = policy_mod.load(db)
    by = db.get(User, row.updated_by_id) if row and row.updated_by_id else None
    return PolicyOut(
        **current.as_dict(),
        updated_at=row.updated_at if row else None,
        updated_by=by.email if by else None,
    )


@router.get("/policy", response_model=PolicyOut)
def get_policy(_admin: CurrentAdmin, db: DbSession) -> PolicyOut:
    """The organisation's privacy policy."""
    return _policy_out(db)


@router.put("/policy", response_model=PolicyOut)
async def put_policy(
    body: PolicyIn, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> PolicyOut:
    """Change the policy: stored with its audit entry in one transaction, then applied to the
    next frame (this gateway at once, the workers and the aggregator from their next batch)."""

    def change() -> tuple[Policy, int, PolicyOut, list[uuid.UUID]]:
        db.execute(select(OrgPolicy).where(OrgPolicy.id == 1).with_for_update())
        before = policy_mod.load(db)
        after = Policy(
            body.emotion_mode or before.emotion_mode,  # type: ignore[arg-type]
            before.min_group_size if body.min_group_size is None else body.min_group_size,
            before.retention_days if body.retention_days is None else body.retention_days,
        )
        try:
            stamp = policy_mod.save(db, after, admin.id)  # the row's new version
        except PolicyError as exc:
            db.rollback()
            raise HTTPException(422, str(exc)) from exc
        audit.record(
            db,
            admin,
            "policy.update",
            "policy",
            1,
            {"before": before.as_dict(), "after": after.as_dict()},
            _client_ip(request),
        )
        db.commit()
        return after, stamp, _policy_out(db), live_session_ids(db)

    policy, stamp, out, sessions = await run_in_threadpool(change)
    try:
        await res.policy.set(policy, stamp)
        await announce_policy(res.redis, sessions, policy)
    except RedisError as exc:
        # Stored (and audited), but the other processes can't see it until Redis is back; the
        # gateways re-mirror PostgreSQL's policy periodically, so it does apply then.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"policy stored but not yet applied: Redis is unavailable ({exc})",
        ) from exc
    return out


# --- audit log -------------------------------------------------------------------------------
def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _entry(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor_id": e.actor_id,
        "actor_email": e.actor_email,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "detail": e.detail,
        "ip": e.ip,
    }


def _to_csv(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    columns = ["id", "at", "actor_id", "actor_email", "action", "target_type", "target_id", "ip"]
    writer = csv.writer(out)
    writer.writerow([*columns, "detail"])
    for e in entries:
        detail = contracts.encoder.encode(e["detail"]).decode()
        # Escaped against CSV injection (classpulse.csvsafe), like the report CSVs.
        writer.writerow(safe_row([*(e[c] for c in columns), detail]))
    return out.getvalue()


@router.get("/audit")
def read_audit(
    admin: CurrentAdmin,
    db: DbSession,
    request: Request,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    action: Annotated[str | None, Query(max_length=64, description="exact, or a prefix*")] = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=AUDIT_CSV_MAX)] = 200,
    before_id: Annotated[
        int | None, Query(description="the previous page's next_before_id")
    ] = None,
) -> Any:
    """Audit entries, newest first, at most ``limit`` (JSON pages of up to 1,000; CSV exports of
    up to 100,000, themselves audited as ``export.audit``)."""
    if format == "json" and limit > AUDIT_PAGE_MAX:
        raise HTTPException(
            422,
            f"limit: at most {AUDIT_PAGE_MAX} per JSON page; page on with before_id",
        )
    start, end = _utc(start), _utc(end)
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if start is not None:
        query = query.where(AuditEntry.at >= start)
    if end is not None:
        query = query.where(AuditEntry.at < end)
    if action:
        if action.endswith("*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(AuditEntry.action.like(prefix + "%"))
        else:
            query = query.where(AuditEntry.action == action)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    entries = [_entry(e) for e in db.scalars(query)]
    if format == "json":
        more = len(entries) == limit
        return {"entries": entries, "next_before_id": entries[-1]["id"] if more else None}
    filters = {
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "action": action,
        "rows": len(entries),
    }
    audit.record(db, admin, "export.audit", "audit", None, filters, _client_ip(request))
    db.commit()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        _to_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="classpulse-audit-{stamp}.csv"'},
    )


# --- deletion on request ---------------------------------------------------------------------
def _count(db: Session, model: Any, *where: Any) -> int:
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def _forget_live(res: Any, session_id: str, student_ids: list[str]) -> None:
    """Close the students' sockets and drop what Redis keeps about them for dashboards."""
    async with res.redis.pipeline(transaction=False) as pipe:
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
        async for f in res.redis.hscan_iter(stats_key)
        if f[0].split(b":", 1)[0].decode(errors="replace") in student_ids
    ]
    if fields:
        await res.redis.hdel(stats_key, *[f[0] for f in fields])


@router.delete("/students/{student_id}")
async def delete_student(
    student_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of one student (name, consent records, buckets, alerts) on request."""

    def remove() -> dict[str, Any]:
        student = db.get(Student, student_id)
        if student is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "student not found")
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
            admin,
            "delete.student",
            "student",
            student_id,
            {"session_id": str(session_id), **counts},
            _client_ip(request),
        )
        db.commit()
        return {"student_id": str(student_id), "session_id": str(session_id), "deleted": counts}

    out = await run_in_threadpool(remove)
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        await _forget_live(res, out["session_id"], [out["student_id"]])
    return out


@router.delete("/sessions/{session_id}/data")
async def delete_session_data(
    session_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of a session's students (names, consent records, buckets, class
    buckets, alerts); the session itself stays listed, ended, with nobody in it."""

    def remove() -> tuple[dict[str, Any], list[str], bool]:
        session = db.get(ClassSession, session_id)
        if session is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
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
        audit.record(
            db, admin, "delete.session_data", "session", session_id, counts, _client_ip(request)
        )
        db.commit()
        return {"session_id": str(session_id), "deleted": counts}, students, was_live

    out, students, was_live = await run_in_threadpool(remove)
    sid = str(session_id)
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        if was_live:
            await publish_session_ended(res.redis, sid)
        await _forget_live(res, sid, students)
        await res.redis.delete(
            contracts.snapshot_key(sid),
            contracts.presence_key(sid),
            contracts.class_live_key(sid),
            contracts.stream_stats_key(sid),
        )
    return out

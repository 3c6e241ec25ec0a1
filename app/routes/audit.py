"""The audit log (admins): read it by date, action and page, or download it as CSV (itself
audited)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import or_, select

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession
from classpulse import audit, contracts
from classpulse.db import (
    AuditEntry,
    utcnow,
)
from records.csvsafe import safe_row

router = APIRouter(prefix="/api/admin", tags=["privacy"])

AUDIT_PAGE_MAX = 1000
AUDIT_CSV_MAX = 100_000


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (backslash is PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
        # Escaped against CSV injection (records.csvsafe), like the report CSVs.
        writer.writerow(safe_row([*(e[c] for c in columns), detail]))
    return out.getvalue()


class AuditEntryOut(BaseModel):
    id: int
    at: str
    actor_id: int | None
    actor_email: str
    action: str
    target_type: str
    target_id: str | None
    detail: dict[str, Any] | None
    ip: str | None


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]  # newest first
    next_before_id: int | None  # ?before_id= for the next page; None: this was the last


@router.get("/audit", response_model=AuditPage, responses={200: {"content": {"text/csv": {}}}})
def read_audit(
    admin: CurrentAdmin,
    db: DbSession,
    request: Request,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[a-z_.]*\*?$", description="exact, or a prefix*"),
    ] = None,
    actor: Annotated[
        str | None,
        # No control characters: PostgreSQL refuses NUL in text.
        Query(max_length=320, pattern=r"^[^\x00-\x1f\x7f]*$", description="part of an email"),
    ] = None,
    target: Annotated[
        str | None,
        Query(
            max_length=64, pattern=r"^[0-9A-Za-z-]*$", description="a session, student or user id"
        ),
    ] = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=AUDIT_CSV_MAX)] = 200,
    before_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="the previous page's next_before_id")
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
            query = query.where(AuditEntry.action.like(_like(action[:-1]) + "%"))
        else:
            query = query.where(AuditEntry.action == action)
    if actor:
        query = query.where(AuditEntry.actor_email.ilike("%" + _like(actor.lower()) + "%"))
    if target:
        query = query.where(
            or_(
                AuditEntry.target_id == target,
                AuditEntry.detail["session_id"].astext == target,
                AuditEntry.detail["student_id"].astext == target,
            )
        )
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
        "actor": actor,
        "target": target,
        "rows": len(entries),
    }
    audit.record(db, admin, "export.audit", "audit", None, filters, client_address(request))
    db.commit()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        _to_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="classpulse-audit-{stamp}.csv"'},
    )

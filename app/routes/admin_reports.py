"""Admin exports across sessions and dates: ``GET /api/admin/reports`` (audited)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, Res, SettingsDep
from classpulse import audit
from classpulse import policy as org_policy
from records import reports

router = APIRouter(prefix="/api/admin", tags=["admin"])
MAX_DAYS = 366


@router.get(
    "/reports", responses={200: {"content": {reports.MEDIA_TYPES["csv"].split(";")[0]: {}}}}
)
def export_reports(
    user: CurrentAdmin,
    db: DbSession,
    res: Res,
    settings: SettingsDep,
    request: Request,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    fmt: Annotated[Literal["csv", "json"], Query(alias="format")] = "json",
) -> StreamingResponse:
    """Reports of every session created from `from` to `to` (UTC days, inclusive)."""
    if end < start or (end - start).days > MAX_DAYS:
        raise HTTPException(
            422,
            f"'to' must be on or after 'from', within {MAX_DAYS} days",
        )
    policy = org_policy.load(db)
    ids = [s.id for s in reports.sessions_between(db, start, end)]
    # Audited before the first byte leaves: an export without its entry cannot happen.
    audit.record(
        db,
        user,
        "export.report",
        "export",
        None,
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "format": fmt,
            "sessions": [str(i) for i in ids],
        },
        client_address(request),
    )
    db.commit()
    name = f"classpulse-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}"
    # A sync generator: Starlette iterates it in its thread pool, off the event loop.
    body = reports.stream_export(
        res.sessionmaker, ids, policy, settings.bucket_seconds, fmt, start, end
    )
    return StreamingResponse(
        body,
        media_type=reports.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

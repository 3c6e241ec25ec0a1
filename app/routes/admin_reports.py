"""Admin exports across sessions and dates: ``GET /api/admin/reports`` (audited)."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from app.deps import CurrentAdmin, DbSession, SettingsDep
from app.routes.reports import MEDIA, client_ip
from classpulse import audit, reports
from classpulse import policy as org_policy

router = APIRouter(prefix="/api/admin", tags=["admin"])
MAX_DAYS = 366


@router.get("/reports")
def export_reports(
    user: CurrentAdmin,
    db: DbSession,
    settings: SettingsDep,
    request: Request,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    fmt: Annotated[Literal["csv", "json"], Query(alias="format")] = "json",
) -> Response:
    """Reports of every session created from `from` to `to` (UTC days, inclusive)."""
    if end < start or (end - start).days > MAX_DAYS:
        raise HTTPException(
            422,
            f"'to' must be on or after 'from', within {MAX_DAYS} days",
        )
    policy = org_policy.load(db)
    built = [
        reports.build_report(db, s, policy, settings.bucket_seconds)
        for s in reports.sessions_between(db, start, end)
    ]
    if fmt == "csv":
        body = reports.write_csv(built).encode()
    else:
        body = json.dumps(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "policy": policy.as_dict(),
                "sessions": [r.as_json() for r in built],
            }
        ).encode()
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
            "sessions": [str(r.session.id) for r in built],
        },
        client_ip(request),
    )
    db.commit()
    name = f"classpulse-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}"
    return Response(
        body,
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

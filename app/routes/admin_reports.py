"""Admin exports across sessions and dates, optionally of one teacher or one session:
``GET /api/admin/reports`` as CSV, JSON or PDF (audited)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, Res, SettingsDep
from classpulse import policy as org_policy
from records import exports, reports

router = APIRouter(prefix="/api/admin", tags=["admin"])
MAX_DAYS = 366
# A PDF is drawn in memory (matplotlib), one or more pages a session: bounded, unlike the
# streamed CSV and JSON.
MAX_PDF_SESSIONS = 50
SESSIONS_HEADER = "X-ClassPulse-Sessions"


@router.get(
    "/reports",
    responses={
        200: exports.FILE_RESPONSE,
        404: {"description": "A PDF of no session: the range (and filters) hold nothing"},
        413: {"description": "Too many sessions for one PDF: narrow the range, or use CSV"},
    },
)
async def export_reports(
    user: CurrentAdmin,
    db: DbSession,
    res: Res,
    settings: SettingsDep,
    request: Request,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    fmt: Annotated[Literal["csv", "json", "pdf"], Query(alias="format")] = "json",
    teacher: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="owner's id")] = None,
    session: Annotated[uuid.UUID | None, Query(description="one session's id")] = None,
) -> Response:
    """Reports of every session created from `from` to `to` (UTC days, inclusive), of one
    teacher or one session if asked. The `X-ClassPulse-Sessions` header says how many; an empty
    CSV or JSON export is a valid (empty) file, an empty PDF a 404 with a message."""
    if end < start or (end - start).days > MAX_DAYS:
        raise HTTPException(
            422,
            f"'to' must be on or after 'from', within {MAX_DAYS} days",
        )

    def prepare() -> tuple[org_policy.Policy, list[uuid.UUID]]:
        ids = exports.session_ids(db, start, end, session, teacher)
        if not ids and fmt == "pdf":
            which = " of this teacher" if teacher is not None else ""
            which += " matching this session" if session is not None else ""
            raise HTTPException(
                404, f"no sessions{which} were created from {start} to {end}: nothing to draw"
            )
        if fmt == "pdf" and len(ids) > MAX_PDF_SESSIONS:
            raise HTTPException(
                413,
                f"{len(ids)} sessions: a PDF holds at most {MAX_PDF_SESSIONS}; narrow the range"
                " or download CSV or JSON",
            )
        policy = org_policy.load(db)
        exports.record(
            db,
            user,
            "export",
            None,
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "format": fmt,
                "teacher": teacher,
                "session": str(session) if session else None,
                "sessions": [str(i) for i in ids],
            },
            client_address(request),
        )
        return policy, ids

    policy, ids = await run_in_threadpool(prepare)
    name = f"classpulse-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}"
    disposition = {
        "Content-Disposition": f'attachment; filename="{name}"',
        SESSIONS_HEADER: str(len(ids)),  # the admin page says "nothing in this range" by it
    }
    body = exports.export_file(
        res.sessionmaker, ids, policy, settings.bucket_seconds, fmt, start, end
    )
    if fmt == "pdf":  # drawn whole (matplotlib, bounded by MAX_PDF_SESSIONS), off the event loop
        pdf = await run_in_threadpool(b"".join, body)
        return Response(pdf, media_type=reports.MEDIA_TYPES["pdf"], headers=disposition)
    # A sync generator: Starlette iterates it in its thread pool, off the event loop.
    return StreamingResponse(body, media_type=reports.MEDIA_TYPES[fmt], headers=disposition)

"""Admin exports across sessions and dates: ``GET /api/admin/reports`` (audited)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.deps import CurrentAdmin, DbSession, Res, SettingsDep
from app.routes.reports import MEDIA, client_ip
from classpulse import audit, reports
from classpulse import policy as org_policy
from classpulse.db import ClassSession
from classpulse.policy import Policy

router = APIRouter(prefix="/api/admin", tags=["admin"])
MAX_DAYS = 366


@router.get("/reports")
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
        client_ip(request),
    )
    db.commit()
    name = f"classpulse-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}"
    built = _each_report(res.sessionmaker, ids, policy, settings.bucket_seconds)
    body = _csv(built, res.sessionmaker, ids) if fmt == "csv" else _json(built, start, end, policy)
    return StreamingResponse(
        body,
        media_type=MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _each_report(
    make_session: Callable[[], Session], ids: list[uuid.UUID], policy: Policy, bucket_seconds: int
) -> Iterator[reports.Report]:
    """One session's report at a time, so a year of a district streams in flat memory. A sync
    generator: Starlette iterates it in its thread pool, off the event loop."""
    with make_session() as db:
        for session_id in ids:
            session = db.get(ClassSession, session_id)
            if session is not None:  # deleted since the export started
                yield reports.build_report(db, session, policy, bucket_seconds)
            db.expunge_all()


def _csv(
    built: Iterator[reports.Report], make_session: Callable[[], Session], ids: list[uuid.UUID]
) -> Iterator[str]:
    with make_session() as db:
        labels = reports.labels_of(db, ids)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(reports.csv_header(labels))
    for report in built:
        writer.writerows(reports.csv_rows(report, labels))
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def _json(built: Iterator[reports.Report], start: date, end: date, policy: Policy) -> Iterator[str]:
    head = {"from": start.isoformat(), "to": end.isoformat(), "policy": policy.as_dict()}
    yield json.dumps(head)[:-1] + ', "sessions": ['
    for i, report in enumerate(built):
        yield ("," if i else "") + json.dumps(report.as_json())
    yield "]}"

"""Export orchestration, one for the session report route, the admin's export and
``classpulse export``: which sessions, the audit entry written before the first byte leaves,
and the file in each format (CSV and JSON streamed one session at a time, PDF drawn whole).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from classpulse import audit, views
from classpulse.db import ClassSession, User
from classpulse.policy import Policy
from records import reports

ACTION = "export.report"
# How the file routes document their answers (OpenAPI): JSON by default, CSV and PDF on request.
FILE_RESPONSE: dict[str, Any] = {
    "content": {reports.MEDIA_TYPES["csv"].split(";")[0]: {}, reports.MEDIA_TYPES["pdf"]: {}}
}


def session_ids(
    db: Session,
    start: date,
    end: date,
    session: uuid.UUID | None = None,
    teacher: int | None = None,
) -> list[uuid.UUID]:
    """The sessions an export of ``start``..``end`` (UTC days) holds, oldest first, of one
    session or one teacher if asked."""
    found = reports.sessions_between(db, start, end, session)
    return [s.id for s in found if teacher is None or s.owner_id == teacher]


def record(
    db: Session,
    actor: User | None,
    target_type: str,
    target_id: object | None,
    detail: dict[str, Any],
    ip: str | None = None,
    actor_email: str | None = None,
) -> None:
    """Audit an export and commit, before anything of it is sent or written: an export without
    its entry cannot happen. ``actor_email`` names a caller without an account ("cli")."""
    entry = audit.record(db, actor, ACTION, target_type, target_id, detail, ip)
    if actor_email is not None:
        entry.actor_email = actor_email
    db.commit()


def report_file(built: reports.Report, fmt: str) -> bytes:
    """One session's report as a file: CSV, JSON or PDF."""
    if fmt == "csv":
        return reports.write_csv([built]).encode()
    if fmt == "pdf":
        return _pdf([built])
    return json.dumps(built.as_json()).encode()


def export_file(
    make_session: Callable[[], Session],
    ids: list[uuid.UUID],
    policy: Policy,
    bucket_seconds: int,
    fmt: str,
    start: date,
    end: date,
) -> Iterator[bytes]:
    """The export of these sessions in pieces: CSV and JSON one session at a time (flat memory
    for a year of a district), a PDF as one piece."""
    built = each_report(make_session, ids, policy, bucket_seconds)
    if fmt == "pdf":
        yield _pdf(list(built))
        return
    if fmt == "csv":
        pieces = _csv(built, make_session, ids, views.shows_attention(policy))
    else:
        pieces = _json(built, start, end, policy)
    for piece in pieces:
        yield piece.encode()


def each_report(
    make_session: Callable[[], Session], ids: list[uuid.UUID], policy: Policy, bucket_seconds: int
) -> Iterator[reports.Report]:
    """One session's report at a time, so a year of a district streams in flat memory."""
    with make_session() as db:
        for session_id in ids:
            session = db.get(ClassSession, session_id)
            if session is not None:  # deleted since the export started
                yield reports.build_report(db, session, policy, bucket_seconds)
            db.expunge_all()


def _csv(
    built: Iterator[reports.Report],
    make_session: Callable[[], Session],
    ids: list[uuid.UUID],
    attention: bool,
) -> Iterator[str]:
    with make_session() as db:
        labels = reports.labels_of(db, ids)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(reports.csv_header(labels, attention))
    for report in built:
        writer.writerows(reports.csv_rows(report, labels, attention))
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


def _pdf(built: list[reports.Report]) -> bytes:
    from records import report_pdf  # matplotlib: only when a PDF is asked for

    return report_pdf.render(built)

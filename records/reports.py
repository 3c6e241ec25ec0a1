"""Session reports and history from the stored time buckets: one module for the API, the admin
export and the CLI (no FastAPI here). Over 300 lines: one report's building, CSV and summaries.

Per bucket, the class row comes from ``class_buckets`` when the aggregator wrote one, else it is
the sum of the students' rows (sessions recorded before class buckets existed). Students
present = students with at least one faced frame in the bucket. The organisation's policy is
applied on read: ``per_student`` shows everything; ``aggregate_only`` class rows only, with the
emotions of buckets below ``min_group_size`` present suppressed; ``off`` presence only. With
attention on (``Policy.attention``, any mode) every row also carries ``attention_frames``,
``facing_frames`` and ``facing_share``, and the students' rows are shown (their estimates
withheld outside ``per_student``); with it off none of those, whatever was stored.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from classpulse import views
from classpulse.db import Alert, ClassBucket, ClassSession, EmotionBucket, Student, User, utcnow
from classpulse.policy import Policy
from records.bucket_stats import DIGITS, dominant, facing_share, mean_probs, total_facing_share
from records.csvsafe import safe_row

# The FER2013 order, which the emotion model uses too; unknown labels are appended sorted.
DEFAULT_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NEGATIVE = ("angry", "disgust", "fear", "sad")

# How each format travels over HTTP (report downloads and admin exports).
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "pdf": "application/pdf",
}


def order_labels(keys: set[str]) -> list[str]:
    """The default labels (always, so a CSV's columns don't depend on the data), then extras."""
    return list(DEFAULT_LABELS) + sorted(keys - set(DEFAULT_LABELS))


@dataclass
class Row:
    """One bucket of the class (``student_id`` None) or of one student."""

    bucket_start: datetime
    frames: int
    frames_with_face: int
    students_present: int
    probs: dict[str, float] | None  # None: no faced frame, suppressed, or emotions off
    student_id: str | None = None
    display_name: str | None = None
    suppressed: bool = False
    # Frames whose head orientation was observed, and of those facing the screen; None while
    # the policy does not observe attention (``views.shows_attention``).
    attention_frames: int | None = None
    facing_frames: int | None = None

    @classmethod
    def of_student(
        cls, b: EmotionBucket, labels: list[str], policy: Policy, name: str | None = None
    ) -> Row:
        """One student's stored bucket, as a report row the policy allows."""
        shown = views.shows_attention(policy)
        return cls(
            b.bucket_start,
            b.frames,
            b.frames_with_face,
            int(b.frames_with_face > 0),
            mean_probs(b.prob_sums or {}, b.frames_with_face, labels)
            if views.shows_students(policy)
            else None,
            str(b.student_id),
            name,
            attention_frames=b.attention_frames if shown else None,
            facing_frames=b.facing_frames if shown else None,
        )

    @property
    def scope(self) -> str:
        return "class" if self.student_id is None else "student"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "student_id": self.student_id,
            "display_name": self.display_name,
            "bucket_start": self.bucket_start.isoformat(),
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "students_present": self.students_present,
            "probs": self.probs,
            "dominant": dominant(self.probs),
            "suppressed": self.suppressed,
            "attention_frames": self.attention_frames,
            "facing_frames": self.facing_frames,
            "facing_share": facing_share(self.attention_frames, self.facing_frames),
        }


@dataclass
class Report:
    session: ClassSession
    owner_email: str
    policy: Policy
    bucket_seconds: int
    labels: list[str]
    class_rows: list[Row]
    student_rows: list[Row]
    students: list[dict[str, Any]]  # roster entries shown (per_student mode only)
    alerts: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[Row]:
        return self.class_rows + self.student_rows

    def as_json(self) -> dict[str, Any]:
        s = self.session
        return {
            "session": {
                "id": str(s.id),
                "title": s.title,
                "owner": self.owner_email,
                "created_at": s.created_at.isoformat(),
                "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            },
            "policy": self.policy.as_dict(),
            "bucket_seconds": self.bucket_seconds,
            "labels": self.labels,
            "summary": self.summary,
            "alerts": self.alerts,
            "students": self.students,
            "rows": self.row_dicts(self.rows()),
        }

    def row_dicts(self, rows: list[Row]) -> list[dict[str, Any]]:
        """Rows as the JSON answers and exports show them (the policy's last word on them)."""
        return [views.attention_view(r.as_dict(), self.policy) for r in rows]


CSV_HEAD = [
    "scope",
    "student_id",
    "display_name",
    "bucket_start",
    "frames",
    "frames_with_face",
    "students_present",
]
# Last, and only while the policy observes attention: a file made with it off has no such column.
CSV_ATTENTION = list(views.ATTENTION_STORED)


def csv_header(labels: list[str], attention: bool = False) -> list[str]:
    """The CSV's header row (labels come from stored data, so escaped like any cell)."""
    tail = CSV_ATTENTION if attention else []
    return safe_row(
        ["session_id", "session_title", *CSV_HEAD, *labels, "dominant", "suppressed", *tail]
    )


def csv_rows(report: Report, labels: list[str], attention: bool = False) -> Iterator[list[str]]:
    """The report's rows for ``csv_header(labels)``; ``labels`` must cover the report's.

    Every CSV path (``write_csv``, the streamed export) writes these rows: each cell goes
    through ``safe_cell``, so a name or title cannot run as a spreadsheet formula.
    """
    for d in report.row_dicts(report.rows()):
        probs = d["probs"] or {}
        yield safe_row(
            [str(report.session.id), report.session.title]
            + [d[k] for k in CSV_HEAD]
            + [f"{probs[k]:.{DIGITS}f}" if k in probs else "" for k in labels]
            + [d["dominant"], "1" if d["suppressed"] else "0"]
            + ["" if d[k] is None else d[k] for k in (CSV_ATTENTION if attention else [])]
        )


def write_csv(reports: list[Report], out: io.StringIO | None = None) -> str:
    """One row per class-or-student and bucket, one column per emotion (mean probability)."""
    out = out or io.StringIO()
    labels = order_labels({k for r in reports for k in r.labels})
    attention = any(views.shows_attention(r.policy) for r in reports)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(csv_header(labels, attention))
    for report in reports:
        writer.writerows(csv_rows(report, labels, attention))
    return out.getvalue()


_LABELS = text(
    """
    SELECT DISTINCT jsonb_object_keys(prob_sums) FROM class_buckets
    WHERE session_id = ANY(CAST(:ids AS uuid[]))
    UNION
    SELECT DISTINCT jsonb_object_keys(prob_sums) FROM emotion_buckets
    WHERE session_id = ANY(CAST(:ids AS uuid[]))
    """
)


def labels_of(db: Session, session_ids: Sequence[uuid.UUID]) -> list[str]:
    """The CSV columns for these sessions' reports, known before any report is built (so an
    export can stream one session at a time)."""
    ids = [str(i) for i in session_ids]
    found = set(db.scalars(_LABELS, {"ids": ids})) if ids else set()
    return order_labels(found)


# --- building ----------------------------------------------------------------------------------
def _alerts(db: Session, session_id: uuid.UUID, per_student: bool) -> list[dict[str, Any]]:
    query = (
        select(Alert, Student.display_name)
        .outerjoin(Student, Student.id == Alert.student_id)
        .where(Alert.session_id == session_id)
        .order_by(Alert.started_at, Alert.id)
    )
    if not per_student:  # outside per_student mode a stored report names no student
        query = query.where(Alert.student_id.is_(None))
    return [alert_dict(a, name) for a, name in db.execute(query)]


def alert_dict(a: Alert, display_name: str | None = None) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule": a.rule,
        "message": a.message,
        "student_id": str(a.student_id) if a.student_id else None,
        "display_name": display_name,
        "started_at": a.started_at.isoformat(),
        "ended_at": a.ended_at.isoformat() if a.ended_at else None,
        "detail": a.detail or {},
    }


def build_report(
    db: Session, session: ClassSession, policy: Policy, bucket_seconds: int = 5
) -> Report:
    """Everything a report, the history page or an export shows of one session."""
    students = db.execute(
        select(EmotionBucket, Student.display_name)
        .join(Student, Student.id == EmotionBucket.student_id)
        .where(EmotionBucket.session_id == session.id)
        .order_by(EmotionBucket.bucket_start, Student.display_name, Student.id)
    ).all()
    stored_class = {
        c.bucket_start: c
        for c in db.scalars(select(ClassBucket).where(ClassBucket.session_id == session.id))
    }
    keys = {k for b, _ in students for k in (b.prob_sums or {})}
    keys |= {k for c in stored_class.values() for k in (c.prob_sums or {})}
    labels = order_labels(keys)

    # Class totals per bucket summed from the students: presence always, emotions as fallback.
    # Attention too: ``off`` writes no class bucket, so its class attention is the students'.
    present: dict[datetime, int] = defaultdict(int)
    summed: dict[datetime, list[Any]] = {}
    for b, _ in students:
        acc = summed.setdefault(b.bucket_start, [0, 0, defaultdict(float), 0, 0])
        acc[0] += b.frames
        acc[1] += b.frames_with_face
        for k, v in (b.prob_sums or {}).items():
            acc[2][k] += v
        acc[3] += b.attention_frames or 0
        acc[4] += b.facing_frames or 0
        if b.frames_with_face > 0:
            present[b.bucket_start] += 1
    for start, c in stored_class.items():
        summed.setdefault(start, [c.frames, c.frames_with_face, {}, 0, 0])
        summed[start][2] = c.prob_sums or {}
        if c.attention_frames:  # erased students' frames stay counted in the class's own
            summed[start][3:] = [c.attention_frames, c.facing_frames]

    attention = views.shows_attention(policy)
    class_rows = []
    for start in sorted(summed):
        frames, faced, sums, observed, facing = summed[start]
        if start in stored_class:  # the class row's own counts, as the aggregator wrote them
            frames, faced = stored_class[start].frames, stored_class[start].frames_with_face
        n = present.get(start, 0)
        shown = views.shows_class(policy, n)
        probs = mean_probs(sums, faced, labels) if shown else None
        # Withheld for a small group (not for emotions off: then there is nothing to withhold).
        suppressed = policy.emotions_on and not shown and faced > 0
        row = Row(start, frames, faced, n, probs, suppressed=suppressed)
        if attention:
            row.attention_frames, row.facing_frames = observed, facing
        class_rows.append(row)

    student_rows: list[Row] = []
    roster: list[dict[str, Any]] = []
    # A student's rows show their estimates (per_student) or their attention: nowhere else.
    if views.shows_students(policy) or attention:
        student_rows = [Row.of_student(b, labels, policy, name) for b, name in students]
        roster = [
            {"student_id": str(s.id), "display_name": s.display_name}
            for s in db.scalars(
                select(Student)
                .where(Student.session_id == session.id)
                .order_by(Student.joined_at, Student.id)
            )
        ]
    owner = db.get(User, session.owner_id)
    report = Report(
        session=session,
        owner_email=owner.email if owner else "",
        policy=policy,
        bucket_seconds=bucket_seconds,
        labels=labels,
        class_rows=class_rows,
        student_rows=student_rows,
        students=roster,
        alerts=_alerts(db, session.id, views.shows_students(policy)),
    )
    report.summary = _summary(db, report, students)
    return report


def _summary(db: Session, report: Report, students: Sequence[Any]) -> dict[str, Any]:
    s = report.session
    end = s.ended_at or utcnow()
    faced = {b.student_id for b, _ in students if b.frames_with_face > 0}
    joined = db.scalar(text("SELECT count(*) FROM students WHERE session_id = :s"), {"s": s.id})
    rows = [r for r in report.class_rows if r.frames > 0]
    shares: dict[str, float] | None = None
    shown = [r for r in report.class_rows if r.probs is not None]
    if shown:
        total = sum(r.frames_with_face for r in shown)
        shares = {
            k: round(sum(r.probs[k] * r.frames_with_face for r in shown if r.probs) / total, DIGITS)
            for k in report.labels
        }
    return {
        "duration_s": round(max(0.0, (end - s.created_at).total_seconds()), 1),
        "students_joined": joined or 0,
        "students_seen": len(faced),
        "frames": sum(b.frames for b, _ in students),
        "frames_with_face": sum(b.frames_with_face for b, _ in students),
        "buckets": len(rows),
        "peak_present": max((r.students_present for r in rows), default=0),
        "mean_present": round(sum(r.students_present for r in rows) / len(rows), 2) if rows else 0,
        "emotion_shares": shares,  # frame-weighted mean probabilities over the shown buckets
        "negative_share": round(sum(shares[k] for k in NEGATIVE if k in shares), DIGITS)
        if shares
        else None,
        "dominant": dominant(shares),
        "suppressed_buckets": sum(1 for r in report.class_rows if r.suppressed),
        "alerts": len(report.alerts),
        # Share of the class's observed frames facing the screen (None: attention off or none).
        "facing_share": total_facing_share(report.class_rows),
    }


def student_series(
    db: Session, session_id: uuid.UUID, student_id: uuid.UUID, policy: Policy
) -> list[dict[str, Any]]:
    """One student's buckets as the policy allows (callers audit the view)."""
    buckets = db.scalars(
        select(EmotionBucket)
        .where(EmotionBucket.session_id == session_id, EmotionBucket.student_id == student_id)
        .order_by(EmotionBucket.bucket_start)
    ).all()
    labels = order_labels({k for b in buckets for k in (b.prob_sums or {})})
    rows = [Row.of_student(b, labels, policy).as_dict() for b in buckets]
    return [views.student_view("bucket", r, policy) for r in rows]


# --- across sessions ---------------------------------------------------------------------------
def day_range(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in UTC: both days included. The last day of the calendar
    (9999-12-31) has no next day: it runs to the last instant instead."""
    if end == date.max:
        stop = datetime.max.replace(tzinfo=UTC)
    else:
        stop = datetime.combine(end + timedelta(days=1), time(), UTC)
    return datetime.combine(start, time(), UTC), stop


def sessions_between(
    db: Session, start: date, end: date, session_id: uuid.UUID | None = None
) -> list[ClassSession]:
    """Sessions created on the days from start to end (UTC, inclusive), oldest first."""
    lo, hi = day_range(start, end)
    query = select(ClassSession).where(ClassSession.created_at >= lo, ClassSession.created_at < hi)
    if session_id is not None:
        query = query.where(ClassSession.id == session_id)
    return list(db.scalars(query.order_by(ClassSession.created_at, ClassSession.id)))


# --- session list figures ----------------------------------------------------------------------
_TOTALS = text(
    """
    SELECT session_id, sum(frames), sum(frames_with_face),
           count(DISTINCT student_id) FILTER (WHERE frames_with_face > 0), max(bucket_start)
    FROM emotion_buckets WHERE session_id = ANY(CAST(:ids AS uuid[])) GROUP BY session_id
    """
)
# Class sums over the buckets shown under the policy (same per-bucket rule as build_report).
_CLASS_SUMS = text(
    """
    WITH present AS (
        SELECT session_id, bucket_start, count(*) FILTER (WHERE frames_with_face > 0) AS n
        FROM emotion_buckets WHERE session_id = ANY(CAST(:ids AS uuid[]))
        GROUP BY session_id, bucket_start
    ), cls AS (
        SELECT session_id, bucket_start, prob_sums FROM class_buckets
        WHERE session_id = ANY(CAST(:ids AS uuid[]))
        UNION ALL
        SELECT e.session_id, e.bucket_start, e.prob_sums FROM emotion_buckets e
        WHERE e.session_id = ANY(CAST(:ids AS uuid[])) AND NOT EXISTS (
            SELECT 1 FROM class_buckets c
            WHERE c.session_id = e.session_id AND c.bucket_start = e.bucket_start)
    )
    SELECT cls.session_id, kv.key, sum(CAST(kv.value AS float8))
    FROM cls LEFT JOIN present p USING (session_id, bucket_start)
    CROSS JOIN LATERAL jsonb_each_text(cls.prob_sums) AS kv
    WHERE coalesce(p.n, 0) >= :min_n
    GROUP BY cls.session_id, kv.key
    """
)
_ALERTS = text(
    "SELECT session_id, count(*) FROM alerts WHERE session_id = ANY(CAST(:ids AS uuid[])) "
    "GROUP BY session_id"
)


def session_summaries(
    db: Session, sessions: list[ClassSession], policy: Policy
) -> dict[uuid.UUID, dict[str, Any]]:
    """Figures for the session list, a few grouped queries for all sessions at once."""
    ids = [str(s.id) for s in sessions]
    out: dict[uuid.UUID, dict[str, Any]] = {}
    if not ids:
        return out
    totals = {r[0]: r[1:] for r in db.execute(_TOTALS, {"ids": ids})}
    alerts: dict[uuid.UUID, int] = {sid: n for sid, n in db.execute(_ALERTS, {"ids": ids})}
    sums: dict[uuid.UUID, dict[str, float]] = defaultdict(dict)
    if policy.emotions_on:
        min_n = views.class_min_group(policy)
        for sid, key, value in db.execute(_CLASS_SUMS, {"ids": ids, "min_n": min_n}):
            sums[sid][key] = value
    for s in sessions:
        frames, faced, seen, last = totals.get(s.id, (0, 0, 0, None))
        end = s.ended_at or utcnow()
        out[s.id] = {
            "duration_s": round(max(0.0, (end - s.created_at).total_seconds()), 1),
            "students_seen": seen or 0,
            "frames": int(frames or 0),
            "frames_with_face": int(faced or 0),
            "last_data_at": last.isoformat() if last else None,
            "dominant": dominant(sums.get(s.id)),
            "alerts": alerts.get(s.id, 0),
        }
    return out

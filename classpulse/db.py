"""Database tables (SQLAlchemy 2.0) and the engine factory, shared by gateway and aggregator.

The aggregator is the only writer of emotion data (``emotion_buckets``); the gateway owns
accounts, sessions and students. Alembic migrations in ``migrations/`` create these tables.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()


class Base(DeclarativeBase):
    pass


class User(Base):
    """A teacher or an admin. Students have no accounts."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16), default="teacher")  # teacher | admin
    display_name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # In every access token; incremented by logout, password change and deactivation, which
    # ends all tokens issued before (app.deps.current_user, the live socket).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PasswordLink(Base):
    """A one-time set-password link an admin made for an account (there is no mail server: the
    admin passes it on). Only the SHA-256 of the link's token is kept; a use or a newer link
    for the same account ends it."""

    __tablename__ = "password_links"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


class ClassSession(Base):
    """A class session owned by one teacher; students join it with its join code."""

    __tablename__ = "class_sessions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_uuid)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    join_code: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The session's alert rules as {rule: {parameter: value}}; None means the defaults.
    alert_rules: Mapped[dict | None] = mapped_column(JSONB, nullable=True)


class Student(Base):
    """One join of a session: a display name and the consent given. No account, no face data."""

    __tablename__ = "students"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_uuid)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("class_sessions.id", ondelete="CASCADE"), index=True
    )
    display_name: Mapped[str] = mapped_column(String(80))
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    consent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    consent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BucketCounts:
    """The counts both bucket tables keep per bucket (a mixin: each table gets its own columns).

    Sums, not means, so that folding more results in is an addition; the mean is
    ``prob_sums[label] / frames_with_face`` and the dominant emotion its argmax, computed on read.
    """

    frames: Mapped[int] = mapped_column(Integer, default=0)
    frames_with_face: Mapped[int] = mapped_column(Integer, default=0)
    prob_sums: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    # Faced frames whose head orientation was observed, and of those, facing the screen
    # (docs/attention.md); 0 while attention is off.
    attention_frames: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    facing_frames: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmotionBucket(BucketCounts, Base):
    """Per student and fixed time bucket: frame counts and summed probabilities of faced frames."""

    __tablename__ = "emotion_buckets"
    # The primary key (session_id, student_id, bucket_start) serves per-session reads; these
    # serve retention (by time) and a student's own view, deletion and the FK cascade.
    # Partitioned by UTC day (migration 0006, records/partitions.py): retention drops old days.
    __table_args__ = (
        Index("ix_emotion_buckets_bucket_start", "bucket_start"),
        Index("ix_emotion_buckets_student_id", "student_id"),
        {"postgresql_partition_by": "RANGE (bucket_start)"},
    )
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("class_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    student_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("students.id", ondelete="CASCADE"), primary_key=True
    )
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class ClassBucket(BucketCounts, Base):
    """Per session and time bucket, the whole class: what ``aggregate_only`` keeps instead of
    per-student emotions (same sums-not-means layout as ``EmotionBucket``).

    Written in every mode except ``off``; per-student rows in ``emotion_buckets`` then carry
    presence only (frame counts, empty ``prob_sums``) unless the policy is ``per_student``.
    """

    __tablename__ = "class_buckets"
    __table_args__ = (
        Index("ix_class_buckets_bucket_start", "bucket_start"),
        {"postgresql_partition_by": "RANGE (bucket_start)"},  # by UTC day, as emotion_buckets
    )
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("class_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class OrgPolicy(Base):
    """The organisation's privacy policy: a single row (id 1), changed by admins only."""

    __tablename__ = "org_policy"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    emotion_mode: Mapped[str] = mapped_column(String(20), default="per_student")
    min_group_size: Mapped[int] = mapped_column(Integer, default=5)
    retention_days: Mapped[int] = mapped_column(Integer, default=30)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    # Head orientation observed ("facing the screen", docs/attention.md); off unless switched on.
    attention: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # Incremented (in SQL, under the row's lock) by every save; stamps the Redis mirror, so the
    # latest save wins there whatever the clocks of the gateways that made them.
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")


class ConsentRecord(Base):
    """One consent event of a student: accepted (with the text version), declined or withdrawn."""

    __tablename__ = "consent_records"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("class_sessions.id", ondelete="CASCADE"), index=True
    )
    student_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("students.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))  # accepted | declined | withdrawn
    consent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class AuditEntry(Base):
    """Who viewed or exported per-student data, or changed the policy, and when.

    No foreign keys on the targets: the entry must outlive a deleted session or student.
    """

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(64))  # e.g. view.live, export.report, policy.update
    target_type: Mapped[str] = mapped_column(String(32), default="")  # session | student | policy
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict] = mapped_column(JSONB, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Alert(Base):
    """A prompt to look, raised by a session's alert rule; never a judgement of a person.

    Open while ``ended_at`` is None; ``student_id`` is None for class-level rules.
    """

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("class_sessions.id", ondelete="CASCADE"), index=True
    )
    student_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("students.id", ondelete="CASCADE"), nullable=True, index=True
    )
    rule: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[dict] = mapped_column(JSONB, default=dict)


class AppliedResult(Base):
    """Frame ids (frames-stream entry ids) already folded into buckets: replays are no-ops."""

    __tablename__ = "applied_results"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


def sqlalchemy_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: object) -> Engine:
    # pool_pre_ping: a PostgreSQL restart leaves dead connections in the pool; ping replaces them.
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True, **kwargs)

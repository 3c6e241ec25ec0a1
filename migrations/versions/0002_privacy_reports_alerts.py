"""Organisation policy, consent records, audit log, class-level buckets, alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
UUID = postgresql.UUID(as_uuid=True)


def _session_fk(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "session_id",
        UUID,
        sa.ForeignKey("class_sessions.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.add_column("class_sessions", sa.Column("alert_rules", postgresql.JSONB, nullable=True))

    op.create_table(
        "class_buckets",
        _session_fk(primary_key=True),
        sa.Column("bucket_start", TZ, primary_key=True),
        sa.Column("frames", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frames_with_face", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prob_sums", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_emotion_buckets_bucket_start", "emotion_buckets", ["bucket_start"])
    op.create_index("ix_class_buckets_bucket_start", "class_buckets", ["bucket_start"])

    op.create_table(
        "org_policy",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("emotion_mode", sa.String(20), nullable=False, server_default="per_student"),
        sa.Column("min_group_size", sa.Integer, nullable=False, server_default="5"),
        sa.Column("retention_days", sa.Integer, nullable=False, server_default="30"),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column(
            "updated_by_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.CheckConstraint("id = 1", name="org_policy_single_row"),
        sa.CheckConstraint(
            "emotion_mode IN ('per_student', 'aggregate_only', 'off')",
            name="org_policy_emotion_mode_check",
        ),
        sa.CheckConstraint("min_group_size >= 1", name="org_policy_min_group_size_check"),
        sa.CheckConstraint("retention_days >= 1", name="org_policy_retention_days_check"),
    )
    op.execute("INSERT INTO org_policy (id) VALUES (1)")

    op.create_table(
        "consent_records",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        _session_fk(),
        sa.Column(
            "student_id",
            UUID,
            sa.ForeignKey("students.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("consent_version", sa.String(32), nullable=True),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "action IN ('accepted', 'declined', 'withdrawn')", name="consent_records_action_check"
        ),
    )
    op.create_index("ix_consent_records_session_id", "consent_records", ["session_id"])
    op.create_index("ix_consent_records_student_id", "consent_records", ["student_id"])
    op.create_index("ix_consent_records_at", "consent_records", ["at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column(
            "actor_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("actor_email", sa.String(320), nullable=False, server_default=""),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False, server_default=""),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("detail", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("ip", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        _session_fk(),
        sa.Column(
            "student_id",
            UUID,
            sa.ForeignKey("students.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("started_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("detail", postgresql.JSONB, nullable=False, server_default="{}"),
    )
    op.create_index("ix_alerts_session_id", "alerts", ["session_id"])


def downgrade() -> None:
    for table in ("alerts", "audit_log", "consent_records", "org_policy", "class_buckets"):
        op.drop_table(table)
    op.drop_index("ix_emotion_buckets_bucket_start", table_name="emotion_buckets")
    op.drop_column("class_sessions", "alert_rules")

"""Accounts, class sessions, students, emotion buckets, applied result ids.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# Adds two {label: number} JSON objects key by key. The aggregator's upsert uses it so that
# folding a batch into an existing bucket is one atomic statement, whatever the label set.
JSONB_ADD = """
CREATE OR REPLACE FUNCTION cp_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(jsonb_object_agg(k, coalesce((a->>k)::float8, 0) + coalesce((b->>k)::float8, 0)),
                  '{}'::jsonb)
  FROM (SELECT jsonb_object_keys(coalesce(a, '{}'::jsonb)) AS k
        UNION SELECT jsonb_object_keys(coalesce(b, '{}'::jsonb))) AS keys
$$;
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="teacher"),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('teacher', 'admin')", name="users_role_check"),
    )
    op.create_index("ix_users_email", "users", ["email"], unique=True)

    op.create_table(
        "class_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("join_code", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("ended_at", TZ, nullable=True),
    )
    op.create_index("ix_class_sessions_owner_id", "class_sessions", ["owner_id"])
    op.create_index("ix_class_sessions_join_code", "class_sessions", ["join_code"], unique=True)

    op.create_table(
        "students",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "session_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("class_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("display_name", sa.String(80), nullable=False),
        sa.Column("joined_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("consent_version", sa.String(32), nullable=True),
        sa.Column("consent_at", TZ, nullable=True),
        sa.Column("withdrawn_at", TZ, nullable=True),
    )
    op.create_index("ix_students_session_id", "students", ["session_id"])

    op.create_table(
        "emotion_buckets",
        sa.Column(
            "session_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("class_sessions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "student_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("students.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("bucket_start", TZ, primary_key=True),
        sa.Column("frames", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frames_with_face", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prob_sums", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    )

    op.create_table(
        "applied_results",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("applied_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_applied_results_applied_at", "applied_results", ["applied_at"])
    op.execute(JSONB_ADD)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS cp_jsonb_add(jsonb, jsonb)")
    for table in ("applied_results", "emotion_buckets", "students", "class_sessions", "users"):
        op.drop_table(table)

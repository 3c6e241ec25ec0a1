"""Indexes on the student columns of emotion_buckets and alerts; org_policy.version.

``emotion_buckets``' primary key starts with ``session_id``, so a lookup by ``student_id`` alone
(a student's own view, deletion on request, the ``ON DELETE CASCADE`` from ``students``) read the
whole table. ``org_policy.version`` counts saves and stamps the policy's Redis mirror, instead of
a gateway's wall clock.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_emotion_buckets_student_id", "emotion_buckets", ["student_id"])
    op.create_index("ix_alerts_student_id", "alerts", ["student_id"])
    op.add_column(
        "org_policy",
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_column("org_policy", "version")
    op.drop_index("ix_alerts_student_id", table_name="alerts")
    op.drop_index("ix_emotion_buckets_student_id", table_name="emotion_buckets")

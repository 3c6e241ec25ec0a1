"""Attention ("facing the screen", docs/attention.md): the policy switch and the bucket counts.

``org_policy.attention`` (off by default: a new observation is never switched on silently), and
``attention_frames`` / ``facing_frames`` on ``emotion_buckets`` and ``class_buckets``. Both are
partitioned tables (0006): a column added to the parent is added to every partition, and with a
constant default PostgreSQL stores it in the catalogue, so no row is rewritten.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BUCKET_TABLES = ("emotion_buckets", "class_buckets")
COUNTS = ("attention_frames", "facing_frames")


def upgrade() -> None:
    op.execute("ALTER TABLE org_policy ADD COLUMN attention boolean NOT NULL DEFAULT false")
    for table in BUCKET_TABLES:
        adds = ", ".join(f"ADD COLUMN {col} integer NOT NULL DEFAULT 0" for col in COUNTS)
        op.execute(f"ALTER TABLE {table} {adds}")


def downgrade() -> None:
    for table in BUCKET_TABLES:
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {col}" for col in COUNTS))
    op.execute("ALTER TABLE org_policy DROP COLUMN attention")

"""password_links (one-time set-password links) and users.last_login_at.

An admin resets a password by making a set-password link (no mail server: the admin passes it
on). Only the SHA-256 of its token is stored; it expires, and works once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("users", sa.Column("last_login_at", TZ, nullable=True))
    op.create_table(
        "password_links",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
        sa.Column(
            "created_by_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
    )
    op.create_index("ix_password_links_user_id", "password_links", ["user_id"])
    op.create_index("ix_password_links_token_hash", "password_links", ["token_hash"], unique=True)


def downgrade() -> None:
    op.drop_table("password_links")
    op.drop_column("users", "last_login_at")

"""users.token_version: revocable access tokens.

Access tokens carry the account's token version; logout, a password change and a deactivation
increment it, so every token issued before stops working at once (and open live sockets close).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("token_version", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("users", "token_version")

"""api tokens: scope (read | write | admin) and expires_at; existing tokens become write, no expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweepd_api_tokens") as batch:
        # the server default fills the rows that exist: every token so far could write
        batch.add_column(sa.Column("scope", sa.String(16), server_default="write", nullable=False))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweepd_api_tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("scope")

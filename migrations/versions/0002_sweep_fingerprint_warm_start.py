"""sweeps: fingerprint (indexed with the name), warm-start provenance, extension count

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("warm_started_from", sa.String(32), nullable=True))
        batch.add_column(sa.Column("warm_start", sa.JSON(), nullable=True))
        # existing sweeps were never extended
        batch.add_column(sa.Column("extensions", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_sweepd_sweeps_fingerprint_name", ["fingerprint", "name"])


def downgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.drop_index("ix_sweepd_sweeps_fingerprint_name")
        batch.drop_column("extensions")
        batch.drop_column("warm_start")
        batch.drop_column("warm_started_from")
        batch.drop_column("fingerprint")

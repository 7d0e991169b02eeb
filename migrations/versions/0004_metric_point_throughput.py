"""metric points: tokens_per_second, mfu, peak_memory_gb (each step's throughput and memory)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("tokens_per_second", "mfu", "peak_memory_gb")


def upgrade() -> None:
    with op.batch_alter_table("sweepd_metric_points") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweepd_metric_points") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)

"""sweeps: priority (low | normal | high), trial_limit (the running-trial limit the service's
supervisor grants the sweep: its fair share of the shared Ray cluster) and waiting_for (why the
sweep runs fewer trials than it could, for people)

Many sweeps share one Ray cluster under `sweepd serve` (issue 16). The supervisor writes each
running sweep's limit; its driver's searcher reads it before every suggestion, so the limit may
change while the sweep runs. Existing sweeps are normal priority with no limit (the sweep's own
max_concurrent).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.add_column(sa.Column("priority", sa.String(8), nullable=False, server_default="normal"))
        batch.add_column(sa.Column("trial_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("waiting_for", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.drop_column("waiting_for")
        batch.drop_column("trial_limit")
        batch.drop_column("priority")

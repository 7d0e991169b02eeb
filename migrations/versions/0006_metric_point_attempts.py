"""metric points: attempt (which run of the trial wrote each step), and the superseded points

A retried trial runs again (from its checkpoint, or from step 0 without one). Each metric point
carries the attempt that wrote it; when a later attempt reports a step an earlier attempt had
reported too, the earlier point moves to ``sweepd_superseded_points`` (kept, as JSON, apart from
the curve), so the trial's curve holds every step once: the earlier attempt's steps up to the
checkpoint, the later attempt's after it. Existing points were all written by attempt 1.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweepd_metric_points") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "sweepd_superseded_points",
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("point", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["sweepd_trials.id"],
            name=op.f("fk_sweepd_superseded_points_trial_id_sweepd_trials"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("trial_id", "attempt", "step", name=op.f("pk_sweepd_superseded_points")),
    )


def downgrade() -> None:
    op.drop_table("sweepd_superseded_points")
    with op.batch_alter_table("sweepd_metric_points") as batch:
        batch.drop_column("attempt")

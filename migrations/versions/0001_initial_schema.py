"""initial schema: sweeps, trials, metric points, events, API tokens

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweepd_sweeps",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("controller", sa.String(200), nullable=True),
        sa.Column("best_trial_id", sa.String(64), nullable=True),
        sa.Column("ledger", sa.JSON(), nullable=False),
        sa.Column("optuna_study_name", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweepd_sweeps")),
    )
    op.create_index("ix_sweepd_sweeps_created_at", "sweepd_sweeps", ["created_at"])
    op.create_index("ix_sweepd_sweeps_state_created_at", "sweepd_sweeps", ["state", "created_at"])

    op.create_table(
        "sweepd_trials",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sweep_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("metrics_final", sa.JSON(), nullable=True),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweepd_sweeps.id"],
            name=op.f("fk_sweepd_trials_sweep_id_sweepd_sweeps"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweepd_trials")),
        sa.UniqueConstraint("sweep_id", "number", name=op.f("uq_sweepd_trials_sweep_id_number")),
    )
    op.create_index("ix_sweepd_trials_state", "sweepd_trials", ["state"])

    op.create_table(
        "sweepd_metric_points",
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["sweepd_trials.id"],
            name=op.f("fk_sweepd_metric_points_trial_id_sweepd_trials"), ondelete="CASCADE",
        ),
        # Unique per (trial, step), and the index a curve is read through in step order.
        sa.PrimaryKeyConstraint("trial_id", "step", name=op.f("pk_sweepd_metric_points")),
    )

    op.create_table(
        "sweepd_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sweep_id", sa.String(32), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweepd_sweeps.id"],
            name=op.f("fk_sweepd_events_sweep_id_sweepd_sweeps"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["sweepd_trials.id"],
            name=op.f("fk_sweepd_events_trial_id_sweepd_trials"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweepd_events")),
    )
    op.create_index("ix_sweepd_events_sweep_id_id", "sweepd_events", ["sweep_id", "id"])
    op.create_index("ix_sweepd_events_trial_id", "sweepd_events", ["trial_id"])

    op.create_table(
        "sweepd_api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweepd_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_sweepd_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sweepd_api_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("sweepd_api_tokens")
    op.drop_index("ix_sweepd_events_trial_id", table_name="sweepd_events")
    op.drop_index("ix_sweepd_events_sweep_id_id", table_name="sweepd_events")
    op.drop_table("sweepd_events")
    op.drop_table("sweepd_metric_points")
    op.drop_index("ix_sweepd_trials_state", table_name="sweepd_trials")
    op.drop_table("sweepd_trials")
    op.drop_index("ix_sweepd_sweeps_state_created_at", table_name="sweepd_sweeps")
    op.drop_index("ix_sweepd_sweeps_created_at", table_name="sweepd_sweeps")
    op.drop_table("sweepd_sweeps")

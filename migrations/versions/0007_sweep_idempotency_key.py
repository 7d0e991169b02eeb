"""sweeps: idempotency_key (unique; the Idempotency-Key header of POST /sweeps) and the digest of
the request body it was first used with

A client that retries a submit after a lost answer sends the same key again and gets the sweep
the first request made, not a second one; the unique constraint is what holds under concurrent
retries. Existing sweeps have no key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("idempotency_digest", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_sweepd_sweeps_idempotency_key", ["idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("sweepd_sweeps") as batch:
        batch.drop_constraint("uq_sweepd_sweeps_idempotency_key", type_="unique")
        batch.drop_column("idempotency_digest")
        batch.drop_column("idempotency_key")

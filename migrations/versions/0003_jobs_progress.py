"""jobs: total_steps and estimated_finish, the progress of a running attempt

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 16:50:00

The stage tells how many optimizer steps its run takes once the trainer has built its schedule; the
dispatcher stores it with an estimate of the finish time from the pace of the steps so far. OpenAI's job
object has `estimated_finish` (it was always null); `total_steps` gives clients and the dashboard a
progress fraction for epoch-based jobs, whose step count is not in the spec.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('total_steps', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('estimated_finish', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('estimated_finish')
        batch.drop_column('total_steps')

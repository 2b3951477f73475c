"""jobs: the idempotency-key and pipeline indexes hold only the rows that have one

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:05:00

Most jobs have neither an Idempotency-Key nor a pipeline, yet both indexes took an entry for every job on insert
and again on every non-HOT update (each claim, heartbeat-free completion and failure changes `status`, an
indexed column, so all of a row's index entries are written anew). Partial indexes skip those rows: two of
eight index writes per job insert and per queue transition. Lookups are unchanged: they ask for a given key or
pipeline id, which is never NULL. The key stays unique per project (a unique partial index; NULL keys never
conflicted anyway), so a reused Idempotency-Key is still an IntegrityError at insert.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HAS_KEY = {"postgresql_where": sa.text("idempotency_key IS NOT NULL"),
           "sqlite_where": sa.text("idempotency_key IS NOT NULL")}
IN_PIPELINE = {"postgresql_where": sa.text("pipeline_id IS NOT NULL"),
               "sqlite_where": sa.text("pipeline_id IS NOT NULL")}


CLAIMABLE = {"postgresql_where": sa.text("status = 'queued' AND NOT blocked"),
             "sqlite_where": sa.text("status = 'queued' AND NOT blocked")}


def _restore_claim_order() -> None:
    """SQLite's table copy rebuilds indexes from reflection, which drops the claim index's DESC."""
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index('ix_jobs_claimable', table_name='jobs')
        op.create_index('ix_jobs_claimable', 'jobs', [sa.text('priority DESC'), 'seq'], unique=False, **CLAIMABLE)


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:  # SQLite drops a table constraint by copying the table
        batch.drop_constraint('uq_jobs_project_idempotency_key', type_='unique')
        batch.drop_index('ix_jobs_pipeline_id')
    _restore_claim_order()
    op.create_index('uq_jobs_project_idempotency_key', 'jobs', ['project_id', 'idempotency_key'], unique=True,
                    **HAS_KEY)
    op.create_index('ix_jobs_pipeline_id', 'jobs', ['pipeline_id'], unique=False, **IN_PIPELINE)


def downgrade() -> None:
    op.drop_index('ix_jobs_pipeline_id', table_name='jobs', **IN_PIPELINE)
    op.drop_index('uq_jobs_project_idempotency_key', table_name='jobs', **HAS_KEY)
    with op.batch_alter_table('jobs') as batch:
        batch.create_unique_constraint('uq_jobs_project_idempotency_key', ['project_id', 'idempotency_key'])
        batch.create_index('ix_jobs_pipeline_id', ['pipeline_id'], unique=False)
    _restore_claim_order()

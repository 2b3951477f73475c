"""jobs: an index on (project_id, status, seq) for status-filtered pages of the job list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 13:40:00

`GET /v1/fine_tuning/jobs?status=...` reads one project's jobs of one status, newest first: with only
(project_id, seq), Postgres walks the project's jobs of every status until it has a page. Plain CREATE INDEX
(not CONCURRENTLY): migrations run in a transaction, at start-up, before the API serves.
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_jobs_project_status_seq', 'jobs', ['project_id', 'status', 'seq'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_project_status_seq', table_name='jobs')

"""SQLAlchemy 2 tables of the control plane: projects, keys, files, jobs and what jobs produce.

Times are UNIX seconds (float) set by the application, so SQLite and Postgres compare them alike.
Tables with a public prefixed id (``ftjob-…``) also carry an integer ``seq`` primary key: it gives a
stable creation order for pagination and the queue's FIFO tie-break.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on Postgres (indexable, compact), JSON text on SQLite.
JsonColumn = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, not BIGINT.
SeqColumn = BigInteger().with_variant(Integer(), "sqlite")

JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    """A random public id such as ``ftjob-3f9a…`` (24 hex characters, like OpenAI's)."""
    return f"{prefix}-{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonColumn, list[Any]: JsonColumn}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key; the key is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in listings
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class File(Base):
    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(50))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(50))
    num_examples: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="processed")
    created_at: Mapped[float] = mapped_column(Float)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Pipeline(Base):
    __tablename__ = "pipelines"

    seq: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column()  # the body as sent, for display
    job_ids: Mapped[list[Any]] = mapped_column()
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # Partial (migration 0004): most jobs have no key and no pipeline, and every insert and queue transition
        # wrote their NULL entries.
        Index("uq_jobs_project_idempotency_key", "project_id", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL"), sqlite_where=text("idempotency_key IS NOT NULL")),
        Index("ix_jobs_pipeline_id", "pipeline_id", postgresql_where=text("pipeline_id IS NOT NULL"),
              sqlite_where=text("pipeline_id IS NOT NULL")),
        # The claim query's path: only runnable rows are in it, in claim order.
        Index(
            "ix_jobs_claimable", text("priority DESC"), "seq",
            postgresql_where=text("status = 'queued' AND NOT blocked"),
            sqlite_where=text("status = 'queued' AND NOT blocked"),
        ),
        Index("ix_jobs_project_seq", "project_id", "seq"),
        Index("ix_jobs_project_status_seq", "project_id", "status", "seq"),  # status-filtered job pages
        Index("ix_jobs_running_lease", "lease_expires_at",
              postgresql_where=text("status = 'running'"), sqlite_where=text("status = 'running'")),
    )

    seq: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    pipeline_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(1000))  # the model as the client named it
    spec: Mapped[dict[str, Any]] = mapped_column()  # alignment_core JobSpec, complete; never updated
    request: Mapped[dict[str, Any]] = mapped_column()  # OpenAI-shaped fields echoed back to clients
    training_file: Mapped[str | None] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[float] = mapped_column(Float, default=0.0)  # retry backoff: not claimable before
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)  # waits on unfinished dependencies
    depends_on: Mapped[list[Any]] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(300))
    idempotency_hash: Mapped[str | None] = mapped_column(String(64))
    output_model: Mapped[str] = mapped_column(String(1000))  # the name fine_tuned_model will take
    fine_tuned_model: Mapped[str | None] = mapped_column(String(1000))
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[dict[str, Any] | None] = mapped_column()
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # Progress of a running attempt, from its stage (see services.store.queue.record_progress).
    total_steps: Mapped[int | None] = mapped_column(Integer)
    estimated_finish: Mapped[float | None] = mapped_column(Float)
    package_versions: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


class JobDependency(Base):
    """Edges of the job graph, kept as rows so finishing a job finds its dependents by index."""

    __tablename__ = "job_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    depends_on_job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True,
                                                   index=True)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(10), default="info")
    type: Mapped[str] = mapped_column(String(20), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)


class JobMetric(Base):
    """One row per (job, step); reports at the same step merge into it."""

    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_job_metrics_job_step"),)

    id: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(2000))
    metrics: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)


class RegisteredModel(Base):
    """A model a job produced, addressable by its id (the job's fine_tuned_model)."""

    __tablename__ = "models"

    seq: Mapped[int] = mapped_column(SeqColumn, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(1000), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(2000))
    base_model: Mapped[str | None] = mapped_column(String(1000))
    kind: Mapped[str] = mapped_column(String(30), default="policy")  # policy | reward_model | merged
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[float] = mapped_column(Float)

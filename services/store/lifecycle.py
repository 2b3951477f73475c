"""Shared pieces of job state changes: events, dependency release and failure cascades.

All functions take an open Session inside a transaction and never commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, exists, insert, select, update
from sqlalchemy.orm import Session, aliased

from services.store.models import Job, JobDependency, JobEvent

WAITING_STATUSES = ("validating_files", "queued", "paused")


class JobNotFound(LookupError):
    """No job with this id (in this project)."""

    def __init__(self, job_id: str):
        super().__init__(f"no job '{job_id}'")
        self.job_id = job_id


class InvalidTransition(ValueError):
    """The job's current status does not allow the requested change."""

    def __init__(self, job_id: str, status: str, action: str):
        super().__init__(f"job '{job_id}' is {status} and cannot be {action}")
        self.job_id, self.status, self.action = job_id, status, action


class LeaseLost(RuntimeError):
    """The worker no longer holds the job: another owner or attempt has it, or it left 'running'."""

    def __init__(self, job_id: str, worker_id: str, attempt: int | None = None):
        where = f" (attempt {attempt})" if attempt is not None else ""
        super().__init__(f"worker '{worker_id}' no longer holds the lease on job '{job_id}'{where}")
        self.job_id, self.worker_id, self.attempt = job_id, worker_id, attempt


def add_events(session: Session, events: Iterable[dict[str, Any]]) -> None:
    """Insert event rows: dicts with job_id, message and optional level, type, data."""
    now = time.time()
    rows = [
        {"level": "info", "type": "message", "data": None, "created_at": now, **event} for event in events
    ]
    if rows:
        # Core insert on the table: no ORM bookkeeping or RETURNING, one multi-row INSERT per batch.
        session.connection().execute(insert(JobEvent.__table__), rows)


def error_object(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}


def release_ready_dependents(session: Session, finished_job_ids: Iterable[str] | None = None) -> list[str]:
    """Unblock queued jobs whose every dependency succeeded; limited to dependents of given jobs."""
    other_dependency = aliased(JobDependency)
    dependency_job = aliased(Job)
    unfinished_input = exists().where(
        other_dependency.job_id == Job.id,
        dependency_job.id == other_dependency.depends_on_job_id,
        dependency_job.status != "succeeded",
    )
    conditions = [Job.blocked.is_(True), Job.status.in_(WAITING_STATUSES), ~unfinished_input]
    if finished_job_ids is not None:
        finished = list(finished_job_ids)
        # Most jobs have no dependents: one index lookup instead of the update below.
        dependents = session.execute(
            select(JobDependency.job_id).where(JobDependency.depends_on_job_id.in_(finished))
        ).scalars().all() if finished else []
        if not dependents:
            return []
        conditions.append(Job.id.in_(dependents))
    released = session.execute(
        update(Job).where(and_(*conditions)).values(blocked=False, updated_at=time.time()).returning(Job.id),
        execution_options={"synchronize_session": False},
    ).scalars().all()
    add_events(session, ({"job_id": job_id, "message": "Inputs are ready; the job can start"} for job_id in released))
    return list(released)


def fail_dependents(session: Session, job_id: str, status: str) -> list[str]:
    """Fail every waiting job that (transitively) depends on `job_id`, which ended `status`."""
    failed: list[str] = []
    frontier = [(job_id, status)]
    now = time.time()
    while frontier:
        source, source_status = frontier.pop()
        dependents = session.execute(
            select(Job.id).join(JobDependency, JobDependency.job_id == Job.id).where(
                JobDependency.depends_on_job_id == source, Job.status.in_(WAITING_STATUSES)
            )
        ).scalars().all()
        for dependent in dependents:
            message = f"input job '{source}' {source_status}, so this job cannot run"
            session.execute(
                update(Job).where(Job.id == dependent).values(
                    status="failed", blocked=False, finished_at=now, updated_at=now,
                    error=error_object("dependency_failed", message, "model"),
                ),
                execution_options={"synchronize_session": False},
            )
            add_events(session, [{"job_id": dependent, "level": "error", "message": message}])
            failed.append(dependent)
            frontier.append((dependent, "failed"))
    return failed

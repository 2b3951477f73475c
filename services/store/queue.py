"""The job queue: enqueue, claim with a lease, heartbeat, finish, retry. Every change writes an event.

API (``sessions`` is a ``sessionmaker`` from ``services.store.engine.make_session_factory``; each
call runs and commits its own transaction unless it takes a ``Session``):

- ``enqueue_job(session, NewJob) -> Job`` / ``enqueue_jobs(session, [NewJob])``: insert in the caller's
  transaction (no commit). Jobs with unfinished ``depends_on`` wait in ``queued`` (blocked).
- ``claim_next_job(sessions, worker_id, lease_seconds) -> ClaimedJob | None`` and
  ``claim_jobs(sessions, worker_id, lease_seconds, limit)``: highest priority, then oldest; Postgres
  uses ``FOR UPDATE SKIP LOCKED``, SQLite ``BEGIN IMMEDIATE``. ``ClaimedJob.attempt`` counts from 1.
- ``renew_lease(sessions, job_id, worker_id, attempt, lease_seconds) -> LeaseFlags(cancel_requested,
  pause_requested)``; raises ``LeaseLost`` when this worker/attempt no longer holds the job.
- ``complete_job(sessions, job_id, worker_id, result=, fine_tuned_model=, trained_tokens=, model_path=)``
  -> the fine_tuned_model id; registers the model when ``model_path`` is given; releases dependents.
- ``fail_job(sessions, job_id, worker_id, error, retryable)`` -> new status: ``queued`` again after
  exponential backoff while attempts < max_attempts, else ``failed`` (dependents fail too).
- ``requeue_expired_leases(sessions) -> [job ids]``: run periodically by dispatchers.
- ``mark_cancelled(sessions, job_id, worker_id)`` / ``mark_paused(sessions, job_id, worker_id)``: the
  worker acknowledges a cancel / pause request it saw in ``LeaseFlags``.
- ``record_event``, ``record_metrics(sessions, job_id, step, metrics)``, ``record_checkpoint(sessions,
  job_id, step, path, metrics)``, ``latest_checkpoint``, ``register_model``, ``resolve_model``.
- ``wait_for_jobs(engine, timeout)``: sleep until a job is enqueued (LISTEN/NOTIFY) or timeout;
  ``AsyncDatabase.notify_workers()`` (services.store.async_db): the wake-up, sent after the enqueueing commit.

On Postgres, claim / renew / complete / fail are one autocommit statement each (``services.store.queue_pg``);
claims and renewals commit without waiting for the WAL flush (safe to lose: see ``queue_pg.RELAXED_CLAIMS``).
SQLite runs the same semantics as several statements in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Engine,
    String,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.store import queue_pg
from services.store.async_db import AsyncDatabase
from services.store.engine import SessionFactory, is_postgres
from services.store.jobs import JobRow, public_row, public_row_of_columns
from services.store.lifecycle import (
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    add_events,
    error_object,
    fail_dependents,
    release_ready_dependents,
)
from services.store.models import (
    Checkpoint,
    File,
    Job,
    JobDependency,
    JobEvent,
    JobMetric,
    RegisteredModel,
    new_id,
)

NOTIFY_CHANNEL = "alignd_jobs"
RETRY_BACKOFF_BASE_S = 5.0
RETRY_BACKOFF_MAX_S = 600.0

__all__ = [
    "ClaimedJob", "DependencyFailed", "InputFileMissing", "InvalidTransition", "JobNotFound", "LeaseFlags",
    "LeaseLost", "NewJob",
    "claim_jobs", "claim_next_job", "complete_job", "complete_jobs", "enqueue_and_commit", "enqueue_job",
    "enqueue_jobs", "fail_job",
    "latest_checkpoint", "mark_cancelled", "mark_paused", "record_checkpoint", "record_event", "record_metrics",
    "register_model", "renew_lease", "requeue_expired_leases", "resolve_model", "wait_for_jobs",
]


class InputFileMissing(ValueError):
    """A job's input file, whose check the API left to the insert (NewJob.live_files), is gone: nothing was
    inserted. The caller checks the files again to say which."""


class DependencyFailed(ValueError):
    """A job names an input job that failed or was cancelled."""

    def __init__(self, job_id: str, status: str):
        super().__init__(f"input job '{job_id}' is {status}")
        self.job_id, self.status = job_id, status


@dataclass
class NewJob:
    """What enqueue needs; the API fills it from a validated request."""

    project_id: str
    spec: dict[str, Any]
    method: str
    model: str
    request: dict[str, Any] = field(default_factory=dict)
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = None
    seed: int = 42
    metadata: dict[str, Any] | None = None
    priority: int = 0
    max_attempts: int = 3
    depends_on: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    idempotency_hash: str | None = None
    output_model: str | None = None
    pipeline_id: str | None = None
    package_versions: dict[str, Any] | None = None
    id: str | None = None
    # Input files (project's, not deleted) that the insert itself must find, in the same statement or
    # transaction; else InputFileMissing and nothing is inserted. The API leaves them here when it knew their
    # formats already (services.store.files.known_file_format) and skipped the lookup round trip.
    live_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    project_id: str
    spec: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_expires_at: float
    seed: int
    depends_on: list[str]
    output_model: str
    metadata: dict[str, Any] | None
    pipeline_id: str | None
    input_files: dict[str, str]  # file id -> storage key (see services.store.blobs)
    input_models: dict[str, str]  # fine_tuned_model of each input job -> its registered path


@dataclass(frozen=True)
class LeaseFlags:
    cancel_requested: bool
    pause_requested: bool


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str
    metrics: dict[str, Any] | None
    created_at: float


def _job_rows(session: Session | None, jobs: list[NewJob]) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows for jobs, their dependency edges and their creation events; checks the inputs exist and can succeed."""
    now = time.time()
    input_ids = {dep for job in jobs for dep in job.depends_on}
    new_ids = [job.id or new_id("ftjob") for job in jobs]
    statuses = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(input_ids))).all()) if input_ids else {}
    statuses.update({job_id: "queued" for job_id in new_ids})  # a pipeline's later stages wait on earlier ones
    rows, edges, events = [], [], []
    for job_id, job in zip(new_ids, jobs):
        for dep in job.depends_on:
            if dep not in statuses:
                raise JobNotFound(dep)
            if statuses[dep] in ("failed", "cancelled"):
                raise DependencyFailed(dep, statuses[dep])
        blocked = any(statuses[dep] != "succeeded" for dep in job.depends_on)
        rows.append({
            "id": job_id, "project_id": job.project_id, "pipeline_id": job.pipeline_id, "status": "queued",
            "method": job.method, "model": job.model, "spec": job.spec, "request": job.request,
            "training_file": job.training_file, "validation_file": job.validation_file, "suffix": job.suffix,
            "seed": job.seed, "metadata": job.metadata, "priority": job.priority, "attempts": 0,
            "max_attempts": job.max_attempts, "run_after": 0.0, "blocked": blocked, "depends_on": job.depends_on,
            "cancel_requested": False, "pause_requested": False, "idempotency_key": job.idempotency_key,
            "idempotency_hash": job.idempotency_hash, "output_model": job.output_model or f"ft-{job_id}",
            "package_versions": job.package_versions, "created_at": now, "updated_at": now,
        })
        edges.extend({"job_id": job_id, "depends_on_job_id": dep} for dep in job.depends_on)
        waiting = f"; waiting for {', '.join(job.depends_on)}" if blocked else ""
        events.append({"job_id": job_id, "message": f"Created fine-tuning job: {job_id}; queued{waiting}"})
    return rows, edges, events


def enqueue_jobs(session: Session, jobs: list[NewJob]) -> list[str]:
    """Insert jobs (queued, or blocked on unfinished inputs) in the caller's transaction; returns ids.

    Wakes no worker: call AsyncDatabase.notify_workers once the transaction is committed."""
    rows, edges, events = _job_rows(session, jobs)
    for job in jobs:
        if job.live_files and _live_file_count(session, job) < len(set(job.live_files)):
            raise InputFileMissing(job.id)
    connection = session.connection()
    connection.execute(insert(Job.__table__), rows)
    if edges:
        connection.execute(insert(JobDependency.__table__), edges)
    add_events(session, events)
    return [row["id"] for row in rows]


def _live_file_count(session: Session, job: NewJob) -> int:
    return session.execute(select(func.count()).select_from(File).where(
        File.id.in_(set(job.live_files)), File.project_id == job.project_id, File.deleted.is_(False))).scalar_one()


def _live_file(index: int) -> Any:
    files = File.__table__
    return exists().where(files.c.id == bindparam(f"live_file_{index}"),
                          files.c.project_id == bindparam("live_files_project"), files.c.deleted.is_(False))


@lru_cache(maxsize=8)
def _enqueue_statement(live_files: int = 0) -> Any:
    """One statement on Postgres: the job and its creation event; ``seq`` read back (no row: an input file in
    NewJob.live_files is gone, nothing was inserted).

    Built once per number of live files, with bind parameters: constructing a CTE per call costs more CPU than
    running it. Only ``seq`` comes back: every other value is the caller's own, and reading the JSON columns back
    cost a third of a create. No NOTIFY here (see async_db._Notifier)."""
    jobs_table, events_table = Job.__table__, JobEvent.__table__
    columns = [column for column in jobs_table.c if column.name != "seq"]
    if live_files:
        # INSERT ... SELECT so that a WHERE can refuse the row. Each value is cast to its column's type: in a
        # SELECT list Postgres would type an untyped parameter (a NULL) as text, and the insert would fail. Strings
        # to VARCHAR without a length: a cast to VARCHAR(64) would cut a long value where the insert refuses it.
        values = select(*(cast(bindparam(column.name, type_=column.type),
                               String() if isinstance(column.type, String) else column.type) for column in columns)
                        ).where(*(_live_file(index) for index in range(live_files)))
        inserted = insert(jobs_table).from_select([column.name for column in columns], values)
    else:
        inserted = insert(jobs_table).values({column.name: bindparam(column.name, type_=column.type)
                                              for column in columns})
    new_job = inserted.returning(jobs_table.c.seq, jobs_table.c.id, jobs_table.c.created_at).cte("new_job")
    logged = insert(events_table).from_select(
        ["job_id", "level", "type", "message", "data", "created_at"],
        select(new_job.c.id, literal("info"), literal("message"), bindparam("event_message", type_=Text()),
               null(), new_job.c.created_at),
    ).cte("logged")
    return select(new_job.c.seq).add_cte(logged)


def _one_statement(job: NewJob) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Postgres, a job that waits on no other job: the statement, its parameters and the job's column values."""
    (row,), _, (event,) = _job_rows(None, [job])
    values = {**_UNSET_COLUMNS, **row}
    params = {**values, "event_message": event["message"]}
    live_files = list(dict.fromkeys(job.live_files))
    if live_files:
        params["live_files_project"] = job.project_id
        params.update({f"live_file_{index}": file_id for index, file_id in enumerate(live_files)})
    return _enqueue_statement(len(live_files)), params, values


def enqueue_job(session: Session, job: NewJob) -> Job:
    """Insert one job in the caller's transaction and return it (detached: read its attributes only).

    On Postgres a job that waits on no other job is one statement. Wakes no worker: call
    AsyncDatabase.notify_workers once the job is committed."""
    if job.depends_on or not is_postgres(session):
        (job_id,) = enqueue_jobs(session, [job])
        return session.execute(select(Job).where(Job.id == job_id)).scalar_one()
    statement, params, values = _one_statement(job)
    values["seq"] = session.execute(statement, params).scalar_one_or_none()
    if values["seq"] is None:
        raise InputFileMissing(job.id)
    return Job(**{attribute.key: values[attribute.columns[0].name] for attribute in Job.__mapper__.column_attrs})


async def enqueue_and_commit(db: AsyncDatabase, job: NewJob) -> JobRow:
    """Insert and commit one job; returns its public row. On Postgres a job that waits on no other job is one
    self-committing statement; otherwise a transaction in a worker thread. Wakes no worker (db.notify_workers)."""
    if db.is_postgres and not job.depends_on:
        statement, params, values = _one_statement(job)
        if await db.row(statement, params) is None:
            raise InputFileMissing(job.id)
        return public_row_of_columns(values)
    return public_row(await db.in_transaction(lambda session: enqueue_job(session, job)))


_UNSET_COLUMNS = {column.name: None for column in Job.__table__.c if column.name != "seq"}


def claim_jobs(sessions: SessionFactory, worker_id: str, lease_seconds: float, limit: int = 1) -> list[ClaimedJob]:
    """Lease up to `limit` runnable jobs to `worker_id`, highest priority first, then oldest."""
    if _on_postgres(sessions):
        claimed = queue_pg.execute_once(sessions, lambda c: queue_pg.claim(c, worker_id, lease_seconds, limit),
                                         durable=False)
        if not claimed:
            with sessions.begin() as session:
                # Safety net for a dependency that finished while its dependent was being inserted.
                release_ready_dependents(session)
            return []
        if not any(_needs_lookups(row) for row in claimed):
            return [_claimed_job(None, row) for row in claimed]
        with sessions() as session:
            return [_claimed_job(session, row) for row in claimed]
    with sessions.begin() as session:
        now = time.time()
        candidates = (
            select(Job.seq)
            .where(Job.status == "queued", Job.blocked.is_(False), Job.run_after <= now)
            .order_by(Job.priority.desc(), Job.seq)
            .limit(limit)
        )
        claimed = session.execute(
            update(Job)
            .where(Job.seq.in_(candidates.scalar_subquery()))
            .values(status="running", lease_owner=worker_id, lease_expires_at=now + lease_seconds,
                    attempts=Job.attempts + 1, started_at=now, updated_at=now, cancel_requested=False)
            .returning(Job.id, Job.project_id, Job.spec, Job.attempts, Job.max_attempts, Job.lease_expires_at,
                       Job.seed, Job.depends_on, Job.output_model, Job.metadata_, Job.pipeline_id, Job.priority,
                       Job.seq),
            execution_options={"synchronize_session": False},
        ).all()
        if not claimed:
            # Safety net for a dependency that finished while its dependent was being inserted.
            release_ready_dependents(session)
            return []
        claimed = sorted(claimed, key=lambda row: (-row.priority, row.seq))
        add_events(session, ({"job_id": row.id, "message": f"Job started (attempt {row.attempts}) on {worker_id}",
                              "data": {"attempt": row.attempts, "worker_id": worker_id}} for row in claimed))
        return [_claimed_job(session, row) for row in claimed]


def claim_next_job(sessions: SessionFactory, worker_id: str, lease_seconds: float) -> ClaimedJob | None:
    """Lease the next runnable job, or None when nothing is runnable."""
    jobs = claim_jobs(sessions, worker_id, lease_seconds, limit=1)
    return jobs[0] if jobs else None


def _on_postgres(sessions: SessionFactory) -> bool:
    return sessions.kw["bind"].dialect.name == "postgresql"


def _input_file_ids(spec: dict[str, Any] | None) -> list[str]:
    data = (spec or {}).get("data") or {}
    return [name for name in [*data.get("train_files", []), *data.get("eval_files", [])]
            if isinstance(name, str) and name.startswith("file-")]


def _needs_lookups(row: Any) -> bool:
    return bool(row.depends_on) or bool(_input_file_ids(row.spec))


def _claimed_job(session: Session | None, row: Any) -> ClaimedJob:
    """The claimed row plus its input files' storage keys and input models' paths (session only if needed)."""
    file_ids = _input_file_ids(row.spec)
    input_files: dict[str, str] = {}
    if file_ids:
        input_files = dict(session.execute(select(File.id, File.storage_key).where(File.id.in_(file_ids))).all())
    input_models: dict[str, str] = {}
    if row.depends_on:
        input_models = dict(session.execute(
            select(RegisteredModel.id, RegisteredModel.path).where(RegisteredModel.job_id.in_(row.depends_on))
        ).all())
    return ClaimedJob(
        id=row.id, project_id=row.project_id, spec=row.spec, attempt=row.attempts, max_attempts=row.max_attempts,
        lease_expires_at=row.lease_expires_at, seed=row.seed, depends_on=list(row.depends_on or []),
        output_model=row.output_model, metadata=row.metadata_, pipeline_id=row.pipeline_id,
        input_files=input_files, input_models=input_models,
    )


def _held(worker_id: str, job_id: str, attempt: int | None) -> list[Any]:
    conditions = [Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running"]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    return conditions


def renew_lease(sessions: SessionFactory, job_id: str, worker_id: str, attempt: int | None = None,
                lease_seconds: float = 30.0) -> LeaseFlags:
    """Extend the lease; returns the cancel / pause flags. Raises LeaseLost if the job is no longer ours."""
    if _on_postgres(sessions):
        row = queue_pg.execute_once(sessions, lambda c: queue_pg.renew(c, job_id, worker_id, attempt, lease_seconds),
                                    durable=False)
        if row is None:
            raise LeaseLost(job_id, worker_id, attempt)
        return LeaseFlags(cancel_requested=bool(row.cancel_requested), pause_requested=bool(row.pause_requested))
    with sessions.begin() as session:
        row = session.execute(
            update(Job).where(*_held(worker_id, job_id, attempt))
            .values(lease_expires_at=time.time() + lease_seconds)
            .returning(Job.cancel_requested, Job.pause_requested),
            execution_options={"synchronize_session": False},
        ).first()
    if row is None:
        raise LeaseLost(job_id, worker_id, attempt)
    return LeaseFlags(cancel_requested=bool(row.cancel_requested), pause_requested=bool(row.pause_requested))


def complete_jobs(sessions: SessionFactory, job_ids: list[str], worker_id: str) -> list[str]:
    """Mark several held jobs succeeded in one transaction (no outputs); returns those that were held."""
    if _on_postgres(sessions):
        return queue_pg.execute_once(sessions, lambda c: queue_pg.complete_many(c, job_ids, worker_id))
    with sessions.begin() as session:
        now = time.time()
        done = session.execute(
            update(Job).where(Job.id.in_(job_ids), Job.lease_owner == worker_id, Job.status == "running")
            .values(status="succeeded", finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None,
                    fine_tuned_model=Job.output_model)
            .returning(Job.id),
            execution_options={"synchronize_session": False},
        ).scalars().all()
        add_events(session, ({"job_id": job_id, "message": "The job has successfully completed"} for job_id in done))
        release_ready_dependents(session, done)
    return list(done)


def complete_job(sessions: SessionFactory, job_id: str, worker_id: str, *, result: dict[str, Any] | None = None,
                 fine_tuned_model: str | None = None, trained_tokens: int | None = None,
                 attempt: int | None = None, model_path: str | None = None, model_kind: str = "policy",
                 package_versions: dict[str, Any] | None = None) -> str:
    """Mark the held job succeeded; returns its fine_tuned_model. Raises LeaseLost if not held."""
    if _on_postgres(sessions):
        values = {"result": result, "trained_tokens": trained_tokens, "fine_tuned_model": fine_tuned_model,
                  "package_versions": package_versions, "model_path": model_path, "model_kind": model_kind}
        model_id = queue_pg.execute_once(sessions, lambda c: queue_pg.complete(c, job_id, worker_id, attempt, values))
        if model_id is None:
            raise LeaseLost(job_id, worker_id, attempt)
        return model_id
    with sessions.begin() as session:
        now = time.time()
        values: dict[str, Any] = {"status": "succeeded", "finished_at": now, "updated_at": now, "lease_owner": None,
                                  "lease_expires_at": None, "result": result, "trained_tokens": trained_tokens}
        if package_versions is not None:
            values["package_versions"] = package_versions
        values["fine_tuned_model"] = fine_tuned_model if fine_tuned_model is not None else Job.output_model
        row = session.execute(
            update(Job).where(*_held(worker_id, job_id, attempt)).values(**values)
            .returning(Job.fine_tuned_model, Job.project_id, Job.model),
            execution_options={"synchronize_session": False},
        ).first()
        if row is None:
            raise LeaseLost(job_id, worker_id, attempt)
        model_id = row.fine_tuned_model
        if model_path is not None:
            _insert_model(session, row.project_id, job_id, model_id, model_path, row.model, model_kind, None)
        add_events(session, [{"job_id": job_id, "message": "The job has successfully completed",
                              "data": {"fine_tuned_model": model_id, "trained_tokens": trained_tokens}}])
        release_ready_dependents(session, [job_id])
    return model_id


def fail_job(sessions: SessionFactory, job_id: str, worker_id: str, error: dict[str, Any] | str,
             retryable: bool = False, attempt: int | None = None,
             backoff_base_s: float = RETRY_BACKOFF_BASE_S) -> str:
    """Record a failed attempt: requeue with exponential backoff if retryable and attempts remain, else fail."""
    if isinstance(error, str):
        error = error_object("job_failed", error)
    if _on_postgres(sessions):
        status = queue_pg.execute_once(sessions, lambda c: queue_pg.fail(c, job_id, worker_id, attempt, error,
                                                                         retryable, backoff_base_s,
                                                                         RETRY_BACKOFF_MAX_S))
        if status is None:
            raise LeaseLost(job_id, worker_id, attempt)
        return status
    with sessions.begin() as session:
        held = select(Job).where(*_held(worker_id, job_id, attempt)).with_for_update()
        job = session.execute(held).scalar_one_or_none()
        if job is None:
            raise LeaseLost(job_id, worker_id, attempt)
        now = time.time()
        message = error.get("message", "unknown error")
        job.lease_owner, job.lease_expires_at, job.updated_at = None, None, now
        if retryable and job.attempts < job.max_attempts:
            delay = min(backoff_base_s * 2 ** (job.attempts - 1), RETRY_BACKOFF_MAX_S)
            job.status, job.run_after = "queued", now + delay
            add_events(session, [{"job_id": job_id, "level": "warn", "data": {"error": error, "retry_in_s": delay},
                                  "message": f"Attempt {job.attempts} failed: {message}; retrying in {delay:.0f}s"}])
            return "queued"
        job.status, job.finished_at, job.error = "failed", now, error
        add_events(session, [{"job_id": job_id, "level": "error", "data": {"error": error},
                              "message": f"The job failed: {message}"}])
        session.flush()
        fail_dependents(session, job_id, "failed")
        return "failed"


def requeue_expired_leases(sessions: SessionFactory, now: float | None = None) -> list[str]:
    """Return jobs whose lease ran out to the queue (or fail them when attempts are used up)."""
    with sessions.begin() as session:
        now = time.time() if now is None else now
        query = select(Job).where(Job.status == "running", Job.lease_expires_at < now)
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        requeued = []
        for job in session.execute(query).scalars().all():
            owner = job.lease_owner
            job.lease_owner, job.lease_expires_at, job.updated_at = None, None, now
            if job.cancel_requested:
                job.status, job.finished_at = "cancelled", now
                add_events(session, [{"job_id": job.id, "message": "The job was cancelled (its worker is gone)"}])
                session.flush()
                fail_dependents(session, job.id, "cancelled")
            elif job.attempts >= job.max_attempts:
                job.status, job.finished_at = "failed", now
                job.error = error_object("lease_expired", f"worker '{owner}' stopped renewing its lease on attempt "
                                         f"{job.attempts} of {job.max_attempts}")
                add_events(session, [{"job_id": job.id, "level": "error", "message": job.error["message"]}])
                session.flush()
                fail_dependents(session, job.id, "failed")
            else:
                job.status = "paused" if job.pause_requested else "queued"
                job.pause_requested = False
                add_events(session, [{"job_id": job.id, "level": "warn",
                                      "message": f"Lease of worker '{owner}' expired on attempt {job.attempts}; "
                                                 f"job {job.status} again"}])
                requeued.append(job.id)
        release_ready_dependents(session)
    return requeued


def mark_cancelled(sessions: SessionFactory, job_id: str, worker_id: str | None = None) -> None:
    """The worker stopped a job whose cancel it saw; dependents fail."""
    with sessions.begin() as session:
        conditions = _held(worker_id, job_id, None) if worker_id else [Job.id == job_id]
        now = time.time()
        done = session.execute(
            update(Job).where(*conditions).values(status="cancelled", finished_at=now, updated_at=now,
                                                  lease_owner=None, lease_expires_at=None).returning(Job.id),
            execution_options={"synchronize_session": False},
        ).first()
        if done is None:
            raise LeaseLost(job_id, worker_id or "-")
        add_events(session, [{"job_id": job_id, "message": "The job was cancelled"}])
        fail_dependents(session, job_id, "cancelled")


def mark_paused(sessions: SessionFactory, job_id: str, worker_id: str) -> None:
    """The worker stopped a job whose pause it saw (after a checkpoint); it waits for resume."""
    with sessions.begin() as session:
        now = time.time()
        done = session.execute(
            update(Job).where(*_held(worker_id, job_id, None))
            .values(status="paused", pause_requested=False, updated_at=now, lease_owner=None, lease_expires_at=None)
            .returning(Job.id),
            execution_options={"synchronize_session": False},
        ).first()
        if done is None:
            raise LeaseLost(job_id, worker_id)
        add_events(session, [{"job_id": job_id, "message": "The job was paused"}])


def record_event(sessions: SessionFactory, job_id: str, message: str, level: str = "info",
                 data: dict[str, Any] | None = None, type: str = "message") -> None:
    """Append one event to the job's log."""
    with sessions.begin() as session:
        add_events(session, [{"job_id": job_id, "message": message, "level": level, "data": data, "type": type}])


def record_metrics(sessions: SessionFactory, job_id: str, step: int, metrics: dict[str, float]) -> None:
    """Store metrics of one step; reports for a step already stored merge into it."""
    clean = {name: float(value) for name, value in metrics.items() if isinstance(value, (int, float))}
    for _ in range(2):  # a concurrent insert of the same step loses the race once, then merges
        try:
            with sessions.begin() as session:
                row = session.execute(
                    select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step == step).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    session.add(JobMetric(job_id=job_id, step=step, metrics=clean, created_at=time.time()))
                else:
                    row.metrics = {**row.metrics, **clean}
            return
        except IntegrityError:
            continue


def record_progress(sessions: SessionFactory, job_id: str, total_steps: int, estimated_finish: float | None) -> None:
    """The running attempt's total optimizer steps and estimated finish (epoch seconds; None: not known yet)."""
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(total_steps=total_steps,
                                                                    estimated_finish=estimated_finish))


def record_checkpoint(sessions: SessionFactory, job_id: str, step: int, path: str,
                      metrics: dict[str, Any] | None = None) -> int:
    """Register a saved checkpoint; returns its numeric id."""
    with sessions.begin() as session:
        checkpoint = Checkpoint(job_id=job_id, step=step, path=path, metrics=metrics, created_at=time.time())
        session.add(checkpoint)
        session.flush()
        add_events(session, [{"job_id": job_id, "message": f"Checkpoint saved at step {step}",
                              "data": {"step": step, "path": path}}])
        return checkpoint.id


def checkpoint_paths(sessions: SessionFactory, job_id: str) -> list[str]:
    with sessions() as session:
        return list(session.execute(select(Checkpoint.path).where(Checkpoint.job_id == job_id)).scalars())


def forget_checkpoints(sessions: SessionFactory, job_id: str, paths: list[str]) -> None:
    """Drop the rows of checkpoints whose folders are gone (the trainer keeps only the newest few)."""
    with sessions.begin() as session:
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.path.in_(paths)))


def latest_checkpoint(sessions: SessionFactory, job_id: str) -> CheckpointInfo | None:
    """The newest checkpoint of a job (to resume from), or None."""
    with sessions() as session:
        row = session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None:
            return None
        return CheckpointInfo(step=row.step, path=row.path, metrics=row.metrics, created_at=row.created_at)


def _insert_model(session: Session, project_id: str, job_id: str | None, model_id: str, path: str,
                  base_model: str | None, kind: str, metadata: dict[str, Any] | None) -> None:
    existing = session.execute(select(RegisteredModel).where(RegisteredModel.id == model_id)).scalar_one_or_none()
    if existing is not None:
        existing.path, existing.kind = path, kind
        return
    session.add(RegisteredModel(id=model_id, project_id=project_id, job_id=job_id, path=path, base_model=base_model,
                                kind=kind, metadata_=metadata, created_at=time.time()))


def register_model(sessions: SessionFactory, job_id: str, model_id: str, path: str, kind: str = "policy",
                   metadata: dict[str, Any] | None = None) -> str:
    """Record a model a job produced (adapter, merged or reward model) under `model_id`."""
    with sessions.begin() as session:
        job = session.execute(select(Job.project_id, Job.model).where(Job.id == job_id)).first()
        if job is None:
            raise JobNotFound(job_id)
        _insert_model(session, job.project_id, job_id, model_id, path, job.model, kind, metadata)
        add_events(session, [{"job_id": job_id, "message": f"Model registered: {model_id}",
                              "data": {"model": model_id, "path": path, "kind": kind}}])
    return model_id


def resolve_model(sessions: SessionFactory, model_id: str) -> str | None:
    """The storage path of a registered model, or None if `model_id` is not one."""
    with sessions() as session:
        return session.execute(select(RegisteredModel.path).where(RegisteredModel.id == model_id)).scalar_one_or_none()


def wait_for_jobs(engine: Engine, timeout: float) -> bool:
    """Block until a job is enqueued (Postgres NOTIFY) or `timeout` passes; True if woken by a notice."""
    if engine.dialect.name != "postgresql":
        time.sleep(timeout)
        return False
    import psycopg  # local: only Postgres deployments need it

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for _ in connection.notifies(timeout=timeout, stop_after=1):
            return True
    return False

"""API-side job queries and client-requested transitions (cancel, pause, resume); the queue is in queue.py."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic_core import to_json
from sqlalchemy import JSON, Select, Text, bindparam, cast, func, select, update
from sqlalchemy.orm import Session

from services.store.async_db import AsyncDatabase
from services.store.files import TimeKey, time_key_beyond
from services.store.lifecycle import InvalidTransition, add_events, fail_dependents
from services.store.models import Checkpoint, Job, JobEvent, JobMetric, Pipeline, RegisteredModel

DEFAULT_PAGE = 20


def get_job(session: Session, project_id: str, job_id: str) -> Job | None:
    return session.execute(select(Job).where(Job.id == job_id, Job.project_id == project_id)).scalar_one_or_none()


# The columns of a job a client sees, in this order (services.api.schemas.job_json reads them by position). JSON
# columns come as their stored text: the API splices it into the response instead of parsing and re-dumping it.
PUBLIC_JOB_COLUMNS = ("id", "created_at", "finished_at", "model", "fine_tuned_model", "project_id", "status",
                      "training_file", "validation_file", "spec", "method", "trained_tokens", "error", "seed",
                      "metadata_", "request", "suffix", "priority", "attempts", "max_attempts", "depends_on",
                      "pipeline_id", "cancel_requested", "pause_requested", "result", "package_versions",
                      "total_steps", "estimated_finish", "started_at")
# A public job row: values in PUBLIC_JOB_COLUMNS order, JSON columns as text.
JobRow = tuple


_JSON_COLUMNS = frozenset(attribute.key for attribute in Job.__mapper__.column_attrs
                           if isinstance(attribute.columns[0].type, JSON))
_COLUMN_NAMES = tuple(Job.__mapper__.column_attrs[name].columns[0].name for name in PUBLIC_JOB_COLUMNS)


def public_row(job: Job) -> JobRow:
    """A loaded job as a public row (its JSON values dumped to text)."""
    return tuple(to_json(getattr(job, name)).decode() if name in _JSON_COLUMNS else getattr(job, name)
                 for name in PUBLIC_JOB_COLUMNS)


def public_row_of_columns(values: dict[str, Any]) -> JobRow:
    """A public row from a job's values keyed by column name (what enqueue wrote)."""
    return tuple(to_json(values[column]).decode() if name in _JSON_COLUMNS else values[column]
                 for name, column in zip(PUBLIC_JOB_COLUMNS, _COLUMN_NAMES))


def _public_columns(source: Any) -> list[Any]:
    columns = []
    for name in PUBLIC_JOB_COLUMNS:
        column = Job.__mapper__.column_attrs[name].columns[0]
        value = source.c[column.name]
        columns.append((cast(value, Text) if isinstance(column.type, JSON) else value).label(name))
    return columns


_JOB_BY_ID = select(*_public_columns(Job.__table__)).where(Job.project_id == bindparam("project_id"),
                                                          Job.id == bindparam("job_id"))
_JOB_BY_IDEMPOTENCY_KEY = select(*_public_columns(Job.__table__), Job.idempotency_hash).where(
    Job.project_id == bindparam("project_id"), Job.idempotency_key == bindparam("key"))
_JOB_BY_OUTPUT = select(Job.id, Job.status, Job.fine_tuned_model, Job.output_model, Job.method).where(
    Job.project_id == bindparam("project_id"),
    (Job.id == bindparam("model")) | (Job.output_model == bindparam("model"))
    | (Job.fine_tuned_model == bindparam("model"))).limit(1)


async def public_job(db: AsyncDatabase, project_id: str, job_id: str) -> JobRow | None:
    return await db.row(_JOB_BY_ID, {"project_id": project_id, "job_id": job_id})


async def public_job_by_idempotency_key(db: AsyncDatabase, project_id: str, key: str) -> tuple[JobRow, str] | None:
    """The project's job created with this Idempotency-Key, and the hash of the body it was created with."""
    row = await db.row(_JOB_BY_IDEMPOTENCY_KEY, {"project_id": project_id, "key": key})
    return None if row is None else (row[:-1], row[-1])


class JobOutput(NamedTuple):
    id: str
    status: str
    fine_tuned_model: str | None
    output_model: str
    method: str


async def find_job_by_output(db: AsyncDatabase, project_id: str, model: str) -> JobOutput | None:
    """The job of this project whose id or (future) fine_tuned_model is `model`, or None."""
    row = await db.row(_JOB_BY_OUTPUT, {"project_id": project_id, "model": model})
    return None if row is None else JobOutput(*row)


@lru_cache(maxsize=64)
def _list_jobs_statement(with_status: bool, with_after: bool, metadata_keys: tuple[str, ...]) -> Select:
    """The page query for one shape of filters, built once: building a select costs more CPU than running it.

    The page is chosen in a subquery and only its rows are turned to text: in one flat query Postgres may sort
    all of a project's jobs and convert every row's JSON before the LIMIT applies (it did, on fresh tables)."""
    jobs = Job.__table__
    page = select(jobs).where(jobs.c.project_id == bindparam("project_id"))
    if with_status:
        page = page.where(jobs.c.status == bindparam("status"))
    for index, key in enumerate(metadata_keys):
        page = page.where(Job.metadata_[key].as_string() == bindparam(f"metadata_value_{index}"))
    if with_after:
        cursor = select(jobs.c.seq).where(jobs.c.id == bindparam("after"),
                                          jobs.c.project_id == bindparam("project_id")).scalar_subquery()
        # An unknown cursor gives an empty page (the route then says so): paging from the start again would send
        # a client that holds a stale cursor round in circles.
        page = page.where(jobs.c.seq < func.coalesce(cursor, -1))
    page = page.order_by(jobs.c.seq.desc()).limit(bindparam("limit")).subquery("page")
    return select(*_public_columns(page)).order_by(page.c.seq.desc())


async def list_jobs(db: AsyncDatabase, project_id: str, *, after: str | None = None, limit: int = DEFAULT_PAGE,
                    status: str | None = None, metadata: dict[str, str] | None = None) -> tuple[list[JobRow], bool]:
    """Newest first; `after` is the id of the last job of the previous page."""
    metadata = metadata or {}
    statement = _list_jobs_statement(status is not None, after is not None, tuple(metadata))
    params: dict[str, Any] = {"project_id": project_id, "limit": limit + 1, "status": status, "after": after}
    params.update({f"metadata_value_{index}": value for index, value in enumerate(metadata.values())})
    rows = await db.rows(statement, params)
    return rows[:limit], len(rows) > limit


def list_events(session: Session, job_id: str, *, after: int | None = None,
                limit: int = DEFAULT_PAGE) -> tuple[list[JobEvent], bool]:
    """Newest first, like OpenAI's event list; `after` is the numeric id of the last event seen."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id < after)
    rows = list(session.execute(query.order_by(JobEvent.id.desc()).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def list_checkpoints(session: Session, job_id: str, *, after: int | None = None,
                     limit: int = 10) -> tuple[list[Checkpoint], bool]:
    """Newest first; `after` is the numeric id of the last checkpoint seen."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        query = query.where(Checkpoint.id < after)
    rows = list(session.execute(query.order_by(Checkpoint.id.desc()).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def list_metrics(session: Session, job_id: str, *, after_step: int | None = None,
                 limit: int = 100) -> tuple[list[JobMetric], bool]:
    """Oldest step first, for plotting; `after_step` is exclusive."""
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    if after_step is not None:
        query = query.where(JobMetric.step > after_step)
    rows = list(session.execute(query.order_by(JobMetric.step).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def list_succeeded_jobs(session: Session, project_id: str, *, after: TimeKey | None = None, limit: int = 100,
                        newest_first: bool = True) -> list[Job]:
    """Succeeded jobs by (finished_at, id), `limit` + 1 at most: the jobs behind the results files' listing."""
    query = select(Job).where(Job.project_id == project_id, Job.status == "succeeded")
    if after is not None:
        query = query.where(time_key_beyond(Job.finished_at, Job.id, after, newest_first))
    order = (Job.finished_at.desc(), Job.id.desc()) if newest_first else (Job.finished_at, Job.id)
    return list(session.execute(query.order_by(*order).limit(limit + 1)).scalars())


def metrics_of_jobs(session: Session, job_ids: list[str]) -> dict[str, list[JobMetric]]:
    """Every step's metrics of each job, oldest step first, in one query (a page of results files)."""
    rows: dict[str, list[JobMetric]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        query = select(JobMetric).where(JobMetric.job_id.in_(job_ids)).order_by(JobMetric.job_id, JobMetric.step)
        for row in session.execute(query).scalars():
            rows[row.job_id].append(row)
    return rows


def all_metrics(session: Session, job_id: str) -> list[JobMetric]:
    """Every step's metrics of a job, oldest step first."""
    return list(session.execute(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step))
                .scalars())


def _set(session: Session, job: Job, **values: Any) -> None:
    values["updated_at"] = time.time()
    session.execute(update(Job).where(Job.id == job.id).values(**values),
                    execution_options={"synchronize_session": False})
    for name, value in values.items():
        setattr(job, name, value)


def request_cancel(session: Session, job: Job) -> None:
    """Cancel at once if the job is not running; else flag it for its worker to stop."""
    if job.status in ("succeeded", "failed", "cancelled"):
        raise InvalidTransition(job.id, job.status, "cancelled")
    if job.status == "running":
        _set(session, job, cancel_requested=True)
        add_events(session, [{"job_id": job.id, "message": "Cancellation requested"}])
        return
    _set(session, job, status="cancelled", finished_at=time.time(), blocked=False)
    add_events(session, [{"job_id": job.id, "message": "The job was cancelled"}])
    session.flush()
    fail_dependents(session, job.id, "cancelled")


def request_pause(session: Session, job: Job) -> None:
    """Pause a waiting job at once, or ask a running job's worker to checkpoint and stop."""
    if job.status == "queued":
        _set(session, job, status="paused")
        add_events(session, [{"job_id": job.id, "message": "The job was paused"}])
    elif job.status == "running":
        _set(session, job, pause_requested=True)
        add_events(session, [{"job_id": job.id, "message": "Pause requested"}])
    else:
        raise InvalidTransition(job.id, job.status, "paused")


def resume_job(session: Session, job: Job) -> None:
    """Put a paused job back in the queue (its next attempt resumes from the newest checkpoint)."""
    if job.status == "paused":
        _set(session, job, status="queued", pause_requested=False, run_after=0.0)
        add_events(session, [{"job_id": job.id, "message": "The job was resumed and is queued"}])
    elif job.status == "running" and job.pause_requested:
        _set(session, job, pause_requested=False)
        add_events(session, [{"job_id": job.id, "message": "Pause request withdrawn"}])
    else:
        raise InvalidTransition(job.id, job.status, "resumed")


def list_models(session: Session, project_id: str) -> list[RegisteredModel]:
    return list(session.execute(
        select(RegisteredModel).where(RegisteredModel.project_id == project_id).order_by(RegisteredModel.seq)
    ).scalars())


def get_model(session: Session, project_id: str, model_id: str) -> RegisteredModel | None:
    return session.execute(
        select(RegisteredModel).where(RegisteredModel.project_id == project_id, RegisteredModel.id == model_id)
    ).scalar_one_or_none()


def jobs_using_model(session: Session, project_id: str, model_id: str) -> list[str]:
    """Unfinished jobs of the project that name `model_id` as their model or their PPO reward model."""
    unfinished = session.execute(select(Job.id, Job.spec).where(
        Job.project_id == project_id, Job.status.in_(("validating_files", "queued", "running", "paused")))).all()
    return [job_id for job_id, spec in unfinished
            if model_id in (spec["model"]["name_or_path"], (spec["method"].get("reward") or {}).get("model"))]


def delete_model(session: Session, row: RegisteredModel) -> None:
    session.delete(row)


_MODEL_REGISTERED = select(RegisteredModel.id).where(
    RegisteredModel.project_id == bindparam("project_id"), RegisteredModel.id == bindparam("model"))


async def model_registered(db: AsyncDatabase, project_id: str, model_id: str) -> bool:
    return await db.row(_MODEL_REGISTERED, {"project_id": project_id, "model": model_id}) is not None


def add_pipeline(session: Session, *, pipeline_id: str, project_id: str, name: str | None, request: dict[str, Any],
                 job_ids: list[str], metadata: dict[str, Any] | None) -> Pipeline:
    row = Pipeline(id=pipeline_id, project_id=project_id, name=name, request=request, job_ids=job_ids,
                   metadata_=metadata, created_at=time.time())
    session.add(row)
    session.flush()
    return row


def get_pipeline(session: Session, project_id: str, pipeline_id: str) -> Pipeline | None:
    return session.execute(
        select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.project_id == project_id)
    ).scalar_one_or_none()


def list_pipelines(session: Session, project_id: str, *, after: str | None = None,
                   limit: int = DEFAULT_PAGE) -> tuple[list[Pipeline], bool] | None:
    """Newest first; `after` is the id of the last pipeline of the previous page (None if it is not one of ours)."""
    query = select(Pipeline).where(Pipeline.project_id == project_id)
    if after is not None:
        cursor = session.execute(select(Pipeline.seq).where(
            Pipeline.project_id == project_id, Pipeline.id == after)).scalar_one_or_none()
        if cursor is None:
            return None
        query = query.where(Pipeline.seq < cursor)
    rows = list(session.execute(query.order_by(Pipeline.seq.desc()).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def jobs_by_ids(session: Session, job_ids: list[str]) -> list[Job]:
    rows = {job.id: job for job in session.execute(select(Job).where(Job.id.in_(job_ids))).scalars()}
    return [rows[job_id] for job_id in job_ids if job_id in rows]

"""/v1/fine_tuning/jobs: create (idempotent), list, retrieve, cancel / pause / resume, events, checkpoints, metrics."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.api.deps import AppContext, CurrentProject, SessionDep, get_current_project
from services.api.errors import ApiError, bad_request, not_found
from services.api.job_requests import body_hash, build_new_job, recheck_input_files
from services.api.schemas import (
    CheckpointPublic,
    JobCreate,
    JobEventPublic,
    JobPublic,
    ListPublic,
    MetricPublic,
    job_json,
    jobs_page_json,
)
from services.store import jobs as job_store
from services.store.async_db import AsyncDatabase
from services.store.jobs import JobRow, public_row
from services.store.lifecycle import InvalidTransition
from services.store.models import JOB_STATUSES, Job, Project, new_id
from services.store.queue import DependencyFailed, InputFileMissing, NewJob, enqueue_and_commit

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])
QueryModel = TypeVar("QueryModel", bound=BaseModel)


def _json(model: BaseModel) -> Response:
    """The response, serialized here in the handler's thread. A returned model would be validated and serialized
    again by FastAPI on a second trip through the thread pool, with the request's DB connection still held."""
    return Response(model.model_dump_json(), media_type="application/json")


def _job_response(row: JobRow) -> Response:
    return Response(job_json(row), media_type="application/json")


def _job_or_404(session: Session, project_id: str, job_id: str) -> Job:
    job = job_store.get_job(session, project_id, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def _replay(existing: tuple[JobRow, str], digest: str) -> Response:
    row, created_with = existing
    if created_with != digest:
        raise ApiError(409, "This Idempotency-Key was already used with a different request body",
                       param="Idempotency-Key", code="idempotency_key_reused")
    return _job_response(row)


IDEMPOTENCY_KEY_MAX = 300


# The hot routes (create, list, retrieve) are `async def` on the async database: no trip through the thread pool
# and no SQLAlchemy execution layer per statement (see services.store.async_db). Create and list are usually called
# by services.api.hot_routes, which skips FastAPI's routing for them; keep their signatures plain.
@router.post("", response_model=JobPublic)
async def create_job(body: JobCreate, request: Request, project: CurrentProject,
                     idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX)] = None) -> Response:
    context: AppContext = request.app.state.alignd
    db = context.db
    digest = body_hash(body.model_dump(mode="json", exclude_unset=True)) if idempotency_key else None
    if idempotency_key:
        existing = await job_store.public_job_by_idempotency_key(db, project.id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest)
    new_job = await build_new_job(db, project, body, new_id("ftjob"), defer_file_checks=True)
    new_job.idempotency_key, new_job.idempotency_hash = idempotency_key, digest
    try:
        row = await _enqueue(db, project, new_job)
    except DependencyFailed as error:
        raise bad_request(str(error), "model", code="dependency_failed") from None
    except IntegrityError:
        existing = await job_store.public_job_by_idempotency_key(db, project.id, idempotency_key) \
            if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, digest)
    db.notify_workers()
    return _job_response(row)


async def _enqueue(db: AsyncDatabase, project: Project, new_job: NewJob) -> JobRow:
    try:
        return await enqueue_and_commit(db, new_job)
    except InputFileMissing:  # an input file whose check was left to the insert is gone: nothing was inserted
        await recheck_input_files(db, project, new_job)  # raises the 400 that names it
        new_job.live_files = []  # not reached while deletes are final: the files are all there after all
        return await enqueue_and_commit(db, new_job)


def _metadata_filter(request: Request, raw: str | None) -> dict[str, str] | None:
    """Metadata filters as the SDK sends them (``metadata[key]=value``) or as one JSON object."""
    bracketed = {name[len("metadata["):-1]: value for name, value in request.query_params.items()
                 if name.startswith("metadata[") and name.endswith("]")}
    if raw is None:
        return bracketed or None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise bad_request('metadata must be a JSON object of strings, e.g. {"team":"nlp"}', "metadata")
    return parsed


class JobListQuery(BaseModel):
    """The list's query. Validated in one call by the route: FastAPI validated each parameter on its own, which
    cost more CPU than the rest of the request's handling (four parameters, on every page)."""

    after: str | None = Field(None, description="The id of the last job of the previous page.")
    limit: int = Field(20, ge=1, le=1000)
    status: str | None = Field(None, description=f"One of {', '.join(JOB_STATUSES)}.")
    metadata: str | None = Field(None, description='JSON object, e.g. {"team":"nlp"}; or metadata[key]=value.')


def _parse_query(model: type[QueryModel], request: Request) -> QueryModel:
    """`model` from the request's query string; a bad value is a 400 shaped as FastAPI's own validation errors."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestValidationError([{**item, "loc": ("query", *item["loc"])} for item in error.errors()]) \
            from None


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI's description of `model` as query parameters (the route declares none to FastAPI)."""
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": False, "description": field.get("description", ""),
             "schema": {key: value for key, value in field.items() if key != "description"}}
            for name, field in schema["properties"].items()]


@router.get("", response_model=ListPublic, openapi_extra={"parameters": _query_parameters(JobListQuery)})
async def list_jobs(request: Request) -> Response:
    # The caller is read here, not declared as a dependency: FastAPI's solving of even one async dependency cost
    # ~10% of a page's CPU. Same order as before: the key is checked before the query.
    project = await get_current_project(request)
    query = _parse_query(JobListQuery, request)
    after, limit, status, metadata = query.after, query.limit, query.status, query.metadata
    if status is not None and status not in JOB_STATUSES:
        raise bad_request(f"status must be one of {list(JOB_STATUSES)}", "status")
    metadata_filter = _metadata_filter(request, metadata)
    rows, has_more = await job_store.list_jobs(request.app.state.alignd.db, project.id, after=after, limit=limit,
                                               status=status, metadata=metadata_filter)
    if not rows and after is not None and await job_store.public_job(request.app.state.alignd.db, project.id,
                                                                     after) is None:
        raise bad_request(f"after: no job '{after}' in this project (a cursor is the id of a listed job)", "after",
                          code="invalid_cursor")
    return Response(jobs_page_json(rows, has_more), media_type="application/json")


@router.get("/{job_id}", response_model=JobPublic)
async def retrieve_job(job_id: str, request: Request) -> Response:
    project = await get_current_project(request)  # not a dependency: see list_jobs
    row = await job_store.public_job(request.app.state.alignd.db, project.id, job_id)
    if row is None:
        raise not_found("job", job_id)
    return _job_response(row)


def _transition(session: Session, project_id: str, job_id: str, change) -> Response:
    job = _job_or_404(session, project_id, job_id)
    try:
        change(session, job)
    except InvalidTransition as error:
        raise ApiError(409, str(error), code="invalid_state") from None
    session.commit()
    return _job_response(public_row(job))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, session: SessionDep, project: CurrentProject) -> Response:
    return _transition(session, project.id, job_id, job_store.request_cancel)


@router.post("/{job_id}/pause", response_model=JobPublic)
def pause_job(job_id: str, session: SessionDep, project: CurrentProject) -> Response:
    return _transition(session, project.id, job_id, job_store.request_pause)


@router.post("/{job_id}/resume", response_model=JobPublic)
def resume_job(job_id: str, session: SessionDep, project: CurrentProject) -> Response:
    return _transition(session, project.id, job_id, job_store.resume_job)


def _cursor(value: str | None, prefix: str, param: str = "after") -> int | None:
    if value is None:
        return None
    number = value.removeprefix(prefix)
    if not number.isascii() or not number.isdigit() or len(number) > 18:  # ids are 64-bit
        raise bad_request(f"after must be an id like '{prefix}123'", param)
    return int(number)


@router.get("/{job_id}/events", response_model=ListPublic)
def list_job_events(job_id: str, session: SessionDep, project: CurrentProject, after: str | None = None,
                    limit: int = Query(20, ge=1, le=1000)) -> Response:
    _job_or_404(session, project.id, job_id)
    rows, has_more = job_store.list_events(session, job_id, after=_cursor(after, "ftevent-"), limit=limit)
    return _json(ListPublic(data=[JobEventPublic.from_row(row) for row in rows], has_more=has_more))


@router.get("/{job_id}/checkpoints", response_model=ListPublic)
def list_job_checkpoints(job_id: str, session: SessionDep, project: CurrentProject, after: str | None = None,
                         limit: int = Query(10, ge=1, le=1000)) -> Response:
    job = _job_or_404(session, project.id, job_id)
    rows, has_more = job_store.list_checkpoints(session, job_id, after=_cursor(after, "ftckpt-"), limit=limit)
    return _json(ListPublic(data=[CheckpointPublic.from_row(row, job) for row in rows], has_more=has_more))


@router.get("/{job_id}/metrics", response_model=ListPublic)
def list_job_metrics(job_id: str, session: SessionDep, project: CurrentProject,
                     after_step: int | None = Query(None, ge=-1, le=2**31 - 1),
                     limit: int = Query(100, ge=1, le=10000)) -> Response:
    _job_or_404(session, project.id, job_id)
    rows, has_more = job_store.list_metrics(session, job_id, after_step=after_step, limit=limit)
    return _json(ListPublic(data=[MetricPublic.from_row(row) for row in rows], has_more=has_more))

"""/v1/pipelines: a chain of linked jobs (SFT -> RM -> PPO, SFT -> DPO) created in one call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.api.deps import ContextDep, CurrentProject, SessionDep
from services.api.errors import ApiError, bad_request, not_found
from services.api.job_requests import ModelReferences, PendingJob, build_new_job
from services.api.schemas import JobCreate, ListPublic, PipelineCreate, PipelinePublic, PipelineStage
from services.store import jobs as job_store
from services.store.models import new_id
from services.store.queue import enqueue_jobs

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


def _stage_body(stage: PipelineStage, index: int, model: str, reward_model: str | None,
                pipeline: PipelineCreate) -> JobCreate:
    method = dict(stage.method) if isinstance(stage.method, dict) else {"type": stage.method}
    method_type = method.get("type")
    if not isinstance(method_type, str):
        raise bad_request(f"stages[{index}].method.type is required", f"stages[{index}].method")
    settings = dict(method.get(method_type) or {})
    if stage.hyperparameters:
        settings["hyperparameters"] = {**settings.get("hyperparameters", {}), **stage.hyperparameters}
    if method_type == "ppo" and "reward" not in settings:
        chosen = stage.reward_model or reward_model
        if chosen is None:
            raise bad_request(f"stages[{index}]: a ppo stage needs reward_model or an earlier reward_model stage",
                              f"stages[{index}].reward_model")
        settings["reward_model"] = chosen
    fields: dict[str, Any] = {
        "model": model, "training_file": stage.training_file, "validation_file": stage.validation_file,
        "method": {"type": method_type, method_type: settings}, "suffix": stage.suffix or pipeline.suffix,
        "seed": pipeline.seed, "metadata": pipeline.metadata, "priority": pipeline.priority,
        **(stage.extensions or {}),
    }
    try:
        return JobCreate(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first.get("loc", ()))
        message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg")
        param = f"stages[{index}].extensions.{location}"
        raise bad_request(f"{param}: {message}", param) from None


@router.post("", response_model=PipelinePublic)
async def create_pipeline(body: PipelineCreate, project: CurrentProject, context: ContextDep) -> PipelinePublic:
    pipeline_id = new_id("pipe")
    pending: dict[str, PendingJob] = {}
    policy, reward_model = body.model, None
    new_jobs = []
    for index, stage in enumerate(body.stages):
        job_body = _stage_body(stage, index, stage.model or policy, reward_model, body)
        try:
            new_job = await build_new_job(context.db, project, job_body, new_id("ftjob"),
                                          ModelReferences(context.db, project, pending))
        except ApiError as error:
            error.param = f"stages[{index}].{error.param}" if error.param else f"stages[{index}]"
            error.message = f"stages[{index}]: {error.message}"
            raise
        new_job.pipeline_id = pipeline_id
        new_jobs.append(new_job)
        pending[new_job.output_model] = PendingJob(new_job.id, new_job.method)
        if new_job.method == "reward_model":
            reward_model = new_job.output_model
        else:
            policy = new_job.output_model

    def insert(session: Session) -> PipelinePublic:
        job_ids = enqueue_jobs(session, new_jobs)
        row = job_store.add_pipeline(session, pipeline_id=pipeline_id, project_id=project.id, name=body.name,
                                     request=body.model_dump(mode="json"), job_ids=job_ids, metadata=body.metadata)
        session.flush()
        return PipelinePublic.from_row(row, job_store.jobs_by_ids(session, job_ids))

    pipeline = await context.db.in_transaction(insert)
    context.db.notify_workers()
    return pipeline


@router.get("", response_model=ListPublic)
def list_pipelines(session: SessionDep, project: CurrentProject, after: str | None = None,
                   limit: int = Query(20, ge=1, le=100)) -> ListPublic:
    page = job_store.list_pipelines(session, project.id, after=after, limit=limit)
    if page is None:
        raise bad_request(f"after: no pipeline '{after}' in this project (a cursor is the id of a listed pipeline)",
                          "after", code="invalid_cursor")
    rows, has_more = page
    jobs = {job.id: job for job in job_store.jobs_by_ids(session, [job_id for row in rows for job_id in row.job_ids])}
    return ListPublic(data=[PipelinePublic.from_row(row, [jobs[job_id] for job_id in row.job_ids if job_id in jobs])
                            for row in rows], has_more=has_more)


@router.get("/{pipeline_id}", response_model=PipelinePublic)
def retrieve_pipeline(pipeline_id: str, session: SessionDep, project: CurrentProject) -> PipelinePublic:
    row = job_store.get_pipeline(session, project.id, pipeline_id)
    if row is None:
        raise not_found("pipeline", pipeline_id)
    return PipelinePublic.from_row(row, job_store.jobs_by_ids(session, row.job_ids))

"""Request and response shapes, split by use: *Create is what a client may send, *Public what it sees."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import from_json, to_json

from services.api.result_files import results_file_ids
from services.store.jobs import JobRow, public_row
from services.store.models import ApiKey, Checkpoint, File, Job, JobEvent, JobMetric, Pipeline, Project, RegisteredModel

# The seed a trainer accepts (numpy's generator: 0 … 2**32 − 1, inside the jobs table's 64-bit column); file ids
# of 64 characters, and 1,000 for the model name and for the output name built from it
# (``ft:<model>:<suffix>:<job id>``).
SEED_RANGE = {"ge": 0, "le": 2**32 - 1}
MODEL_NAME_MAX = 800
# A suffix becomes one ':'-separated field of the model name and part of a URL path: no ':', '/' or spaces.
SUFFIX = {"max_length": 64, "pattern": r"^[A-Za-z0-9._-]+$"}
FILE_ID_MAX = 64


class CreateModel(BaseModel):
    """Unknown fields are rejected with 400 naming them, never ignored."""

    model_config = ConfigDict(extra="forbid")


class JobCreate(CreateModel):
    """OpenAI's create body plus alignd's extensions (sent by the SDK through ``extra_body``)."""

    model: str = Field(..., min_length=1, max_length=MODEL_NAME_MAX,
                       description="Base model, 'alignd-tiny', or another job's id / output.")
    training_file: str = Field(..., min_length=1, max_length=FILE_ID_MAX)
    validation_file: str | None = Field(None, max_length=FILE_ID_MAX)
    method: dict[str, Any] | None = Field(None, description="{type, <type>: {hyperparameters, ...}}")
    hyperparameters: dict[str, Any] | None = Field(None, description="Legacy top-level hyperparameters.")
    suffix: str | None = Field(None, **SUFFIX)
    seed: int | None = Field(None, **SEED_RANGE)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    integrations: list[dict[str, Any]] | None = None
    # alignd extensions
    lora: dict[str, Any] | bool | None = Field(None, description="LoRA settings ({r, alpha, ...}) or true.")
    quantization: dict[str, Any] | None = Field(None, description="QLoRA settings ({bits, quant_type, ...}).")
    zero_stage: int | None = None
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    offload_optimizer: bool | None = None
    offload_params: bool | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    packing: bool | None = None
    data_format: str | None = None
    eval_split: float | None = None
    max_examples: int | None = None
    filters: dict[str, Any] | None = None
    merge_adapters: bool | None = None
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int = Field(3, ge=1, le=20)
    spec: dict[str, Any] | None = Field(None, description="Partial JobSpec merged over the translated body.")


class PipelineStage(CreateModel):
    method: str | dict[str, Any]
    training_file: str = Field(..., max_length=FILE_ID_MAX)
    validation_file: str | None = Field(None, max_length=FILE_ID_MAX)
    model: str | None = Field(None, max_length=MODEL_NAME_MAX,
                              description="Default: the previous policy stage's output (or the base).")
    reward_model: str | None = Field(None, max_length=MODEL_NAME_MAX,
                                     description="PPO: default the latest reward_model stage's output.")
    hyperparameters: dict[str, Any] | None = None
    suffix: str | None = Field(None, **SUFFIX)
    extensions: dict[str, Any] | None = Field(None, description="Extension fields of JobCreate for this stage.")


class PipelineCreate(CreateModel):
    name: str | None = Field(None, max_length=200)
    model: str = Field(..., min_length=1, max_length=MODEL_NAME_MAX)
    stages: list[PipelineStage] = Field(..., min_length=1, max_length=10)
    suffix: str | None = Field(None, **SUFFIX)
    seed: int | None = Field(None, **SEED_RANGE)
    metadata: dict[str, str] | None = None
    priority: int = Field(0, ge=-1000, le=1000)


class ProjectCreate(CreateModel):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")


class ApiKeyCreate(CreateModel):
    name: str | None = Field(None, max_length=200)


class ListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool = False


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    format: str
    num_examples: int
    sha256: str

    @classmethod
    def from_row(cls, row: File) -> FilePublic:
        return cls(id=row.id, bytes=row.bytes, created_at=int(row.created_at), filename=row.filename,
                   purpose=row.purpose, status=row.status, format=row.format, num_examples=row.num_examples,
                   sha256=row.sha256)


def _openai_hyperparameters(spec: dict[str, Any]) -> dict[str, Any]:
    from alignment_core.specs import PRESETS

    training, method = spec.get("training", {}), spec.get("method", {})
    preset = PRESETS.get(method.get("type", ""), {})
    learning_rate, epochs = training.get("learning_rate"), training.get("epochs")
    # The spec stores epochs as a float (fractions are allowed); OpenAI's SDK types n_epochs `int | "auto"`.
    if isinstance(epochs, float) and epochs.is_integer():
        epochs = int(epochs)
    hyper = {"n_epochs": epochs, "batch_size": training.get("batch_size"),
             "learning_rate_multiplier": (learning_rate / preset["learning_rate"])
             if learning_rate and preset else None}
    if method.get("type") == "dpo":
        hyper["beta"] = method.get("beta")
        if method.get("sft_weight"):  # RPO: shown only when on, so a plain DPO job reads like OpenAI's
            hyper["sft_weight"] = method["sft_weight"]
    return hyper


class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    estimated_finish: int | None = None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: str
    training_file: str | None
    validation_file: str | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    trained_tokens: int | None
    error: dict[str, Any] | None
    seed: int
    metadata: dict[str, Any] | None
    integrations: list[Any] | None
    user_provided_suffix: str | None
    # alignd extensions
    priority: int
    attempts: int
    max_attempts: int
    depends_on: list[str]
    pipeline_id: str | None
    cancel_requested: bool
    pause_requested: bool
    total_steps: int | None = None  # optimizer steps of the run, once its stage has started
    started_at: int | None = None  # when the latest attempt started (a chained job first waits for its inputs)
    result: dict[str, Any] | None
    package_versions: dict[str, Any] | None
    spec: dict[str, Any]

    @classmethod
    def from_row(cls, job: Job) -> JobPublic:
        return cls.model_validate_json(job_json(public_row(job)))


def job_json(row: JobRow) -> bytes:
    """A JobPublic as JSON, from a public job row (services.store.jobs.PUBLIC_JOB_COLUMNS; JSON columns as text).

    The JSON columns are spliced in as stored, not parsed and dumped again (a spec is most of a job's bytes), and
    the fields derived from the spec are rendered once per distinct spec (_spec_fields)."""
    (job_id, created_at, finished_at, model, fine_tuned_model, project_id, status, training_file, validation_file,
     spec, method, trained_tokens, error, seed, metadata, request, suffix, priority, attempts, max_attempts,
     depends_on, pipeline_id, cancel_requested, pause_requested, result, package_versions, total_steps,
     estimated_finish, started_at) = row
    running = status == "running"
    scalars = to_json({
        "id": job_id, "object": "fine_tuning.job", "created_at": int(created_at),
        "finished_at": int(finished_at) if finished_at else None,
        "estimated_finish": int(estimated_finish) if running and estimated_finish else None, "model": model,
        "fine_tuned_model": fine_tuned_model, "organization_id": project_id,
        "result_files": results_file_ids(job_id, status), "status": status, "training_file": training_file,
        "validation_file": validation_file, "trained_tokens": trained_tokens, "seed": seed,
        "integrations": _integrations(request), "user_provided_suffix": suffix, "priority": priority,
        "attempts": attempts, "max_attempts": max_attempts, "pipeline_id": pipeline_id,
        "cancel_requested": bool(cancel_requested), "pause_requested": bool(pause_requested),
        "total_steps": total_steps, "started_at": int(started_at) if started_at else None,
    })
    return b"".join((scalars[:-1], b",", _spec_fields(spec, method), b',"error":', _stored_json(error),
                     b',"metadata":', _stored_json(metadata), b',"depends_on":', _stored_json(depends_on, b"[]"),
                     b',"result":', _stored_json(result), b',"package_versions":', _stored_json(package_versions),
                     b',"spec":', _stored_json(spec), b"}"))


def jobs_page_json(rows: Sequence[JobRow], has_more: bool) -> bytes:
    """A ListPublic of JobPublic as JSON."""
    return b"".join((b'{"object":"list","data":[', b",".join(_listed_job_json(row) for row in rows),
                     b'],"has_more":', b"true" if has_more else b"false", b"}"))


@lru_cache(maxsize=1024)
def _listed_job_json(row: JobRow) -> bytes:
    """job_json of a listed row, remembered by the row's whole content (job_json depends on nothing else).

    Clients list the same jobs again and again (the dashboard polls its page) and most rows have not changed
    since: rendering a row cost ~13 µs, half of a 20-job page's CPU; finding it here, ~1 µs. A row that changed
    in any column is another key, so it is rendered anew."""
    return job_json(row)


@lru_cache(maxsize=4096)
def _spec_fields(spec: str, method: str) -> bytes:
    """``"hyperparameters":{...},"method":{...}`` of a job; a spec is never updated, so its text is the key."""
    parsed = from_json(spec)
    hyper = _openai_hyperparameters(parsed)
    method_type = parsed.get("method", {}).get("type", method)
    return to_json({"hyperparameters": hyper, "method": {"type": method_type, method_type: {"hyperparameters": hyper}}}
                   )[1:-1]


def _integrations(request: str) -> Any:
    return from_json(request).get("integrations") if request else None


def _stored_json(value: str | None, null: bytes = b"null") -> bytes:
    """A JSON column's text as the response's bytes. SQLite keeps what Python's json wrote, NaN and Infinity
    included, which JSON does not allow: such a value is rewritten (as null, like pydantic's serializer does)."""
    if value is None or value == "null":
        return null
    data = value.encode()
    # A one-byte search is a memchr; the three-byte one cost ~2 µs on a spec's 1.2 KB (half a page of jobs' CPU).
    # So the long search runs only on texts holding an 'N' or an 'I', which specs and metadata rarely do.
    if (b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data):
        data = to_json(from_json(data, allow_inf_nan=True), inf_nan_mode="null")
    return data


class JobEventPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None
    type: str

    @classmethod
    def from_row(cls, row: JobEvent) -> JobEventPublic:
        return cls(id=f"ftevent-{row.id}", created_at=int(row.created_at), level=row.level, message=row.message,
                   data=row.data, type=row.type)


# OpenAI's checkpoint metric names and the trainer's names they are read from. Our eval metrics cover the
# whole validation set, so they fill both OpenAI's per-step `valid_*` and its `full_valid_*`.
CHECKPOINT_METRIC_SOURCES = {
    "train_loss": "loss", "train_mean_token_accuracy": "mean_token_accuracy",
    "valid_loss": "eval_loss", "valid_mean_token_accuracy": "eval_mean_token_accuracy",
    "full_valid_loss": "eval_loss", "full_valid_mean_token_accuracy": "eval_mean_token_accuracy",
}


def checkpoint_metrics(step: int, recorded: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's checkpoint metrics (None where not measured), with every metric we recorded kept too."""
    recorded = recorded or {}
    openai_names = {name: recorded.get(source) for name, source in CHECKPOINT_METRIC_SOURCES.items()}
    return {"step": step, **openai_names, **recorded}


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def from_row(cls, row: Checkpoint, job: Job) -> CheckpointPublic:
        return cls(id=f"ftckpt-{row.id}", created_at=int(row.created_at),
                   fine_tuned_model_checkpoint=f"{job.output_model}:ckpt-step-{row.step}",
                   fine_tuning_job_id=job.id, metrics=checkpoint_metrics(row.step, row.metrics),
                   step_number=row.step)


class MetricPublic(BaseModel):
    object: Literal["fine_tuning.job.metric"] = "fine_tuning.job.metric"
    step: int
    metrics: dict[str, float]
    created_at: int

    @classmethod
    def from_row(cls, row: JobMetric) -> MetricPublic:
        return cls(step=row.step, metrics=row.metrics, created_at=int(row.created_at))


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str | None = None
    job_id: str | None = None
    base_model: str | None = None
    path: str | None = None

    @classmethod
    def from_row(cls, row: RegisteredModel) -> ModelPublic:
        return cls(id=row.id, created=int(row.created_at), owned_by=row.project_id, kind=row.kind,
                   job_id=row.job_id, base_model=row.base_model, path=row.path)


class PipelinePublic(BaseModel):
    id: str
    object: Literal["pipeline"] = "pipeline"
    name: str | None
    created_at: int
    status: str
    job_ids: list[str]
    jobs: list[JobPublic]
    metadata: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Pipeline, jobs: list[Job]) -> PipelinePublic:
        statuses = [job.status for job in jobs]
        if any(s in ("failed", "cancelled") for s in statuses):
            status = "failed" if "failed" in statuses else "cancelled"
        elif statuses and all(s == "succeeded" for s in statuses):
            status = "succeeded"
        elif "running" in statuses:
            status = "running"
        else:
            status = "queued"
        return cls(id=row.id, name=row.name, created_at=int(row.created_at), status=status, job_ids=row.job_ids,
                   jobs=[JobPublic.from_row(job) for job in jobs], metadata=row.metadata_)


class ProjectPublic(BaseModel):
    id: str
    object: Literal["project"] = "project"
    name: str
    created_at: int

    @classmethod
    def from_row(cls, row: Project) -> ProjectPublic:
        return cls(id=row.id, name=row.name, created_at=int(row.created_at))


class ApiKeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    project_id: str
    name: str | None
    prefix: str
    created_at: int
    revoked_at: int | None = None
    key: str | None = Field(None, description="The key itself: only in the response that created it.")

    @classmethod
    def from_row(cls, row: ApiKey, key: str | None = None) -> ApiKeyPublic:
        return cls(id=row.id, project_id=row.project_id, name=row.name, prefix=row.prefix,
                   created_at=int(row.created_at), revoked_at=int(row.revoked_at) if row.revoked_at else None,
                   key=key)

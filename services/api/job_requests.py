"""Turn an OpenAI-shaped create body into a validated alignment_core JobSpec and a NewJob for the queue.

Everything is checked here, before anything is queued: field names, the spec, the files (exist, belong
to the project, hold data the method can train on) and the input jobs a model name refers to.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

from pydantic import ValidationError

from alignment_core.data.formats import DataFormatError, check_method_accepts
from alignment_core.rewards.function import BUILTIN_FUNCTIONS
from alignment_core.specs import (
    IMPLEMENTED_METHODS,
    DpoMethod,
    JobSpec,
    PpoMethod,
    RewardModelMethod,
    SupervisedMethod,
    TrainingSpec,
    describe_validation_error,
)
from services.api.errors import ApiError, bad_request
from services.api.model_names import check_model_name
from services.api.schemas import JobCreate
from services.settings import get_settings
from services.store.async_db import AsyncDatabase
from services.store.files import file_format, known_file_format
from services.store.jobs import JobOutput, find_job_by_output, model_registered
from services.store.models import Project
from services.store.queue import NewJob

METHOD_CLASSES = {"supervised": SupervisedMethod, "reward_model": RewardModelMethod, "dpo": DpoMethod,
                  "ppo": PpoMethod}
# OpenAI hyperparameter names and where they land in the spec.
OPENAI_HYPERPARAMETERS = {"n_epochs": ("training", "epochs"), "batch_size": ("training", "batch_size")}
EXTENSION_TARGETS = {
    "zero_stage": ("distribution", "zero_stage"), "num_workers": ("distribution", "num_workers"),
    "gpus_per_worker": ("distribution", "gpus_per_worker"), "cpus_per_worker": ("distribution", "cpus_per_worker"),
    "offload_optimizer": ("distribution", "offload_optimizer"), "offload_params": ("distribution", "offload_params"),
    "max_length": ("data", "max_length"), "max_prompt_length": ("data", "max_prompt_length"),
    "packing": ("data", "packing"), "data_format": ("data", "format"), "eval_split": ("data", "eval_split"),
    "max_examples": ("data", "max_examples"), "filters": ("data", "filters"),
    "quantization": ("model", "quantization"), "merge_adapters": ("output", "merge_adapters"),
}
RECORDED_PACKAGES = ("alignd", "torch", "transformers", "trl", "peft", "ray", "deepspeed")


def body_hash(body: dict[str, Any]) -> str:
    """A stable hash of a request body, for Idempotency-Key comparisons."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages a job runs with (read once: metadata lookups scan site-packages)."""
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _method_settings(
    method: dict[str, Any] | None, legacy: dict[str, Any] | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The method type, its settings object (method.<type>) with legacy hyperparameters folded in, and the
    field each hyperparameter was sent as (`hyperparameters.x` or `method.<type>.hyperparameters.x`)."""
    method = dict(method or {"type": "supervised"})
    method_type = method.pop("type", None)
    if not isinstance(method_type, str):
        raise bad_request("method.type is required (supervised, dpo, reward_model or ppo)", "method.type")
    settings = method.pop(method_type, None) or {}
    if method:
        name = next(iter(method))
        raise bad_request(f"method.{name}: unknown field (method.type is '{method_type}')", f"method.{name}")
    if not isinstance(settings, dict):
        raise bad_request(f"method.{method_type} must be an object", f"method.{method_type}")
    sent_as = {name: f"hyperparameters.{name}" for name in legacy or {}}
    if isinstance(settings.get("hyperparameters"), dict):
        sent_as.update({name: f"method.{method_type}.hyperparameters.{name}" for name in settings["hyperparameters"]})
    if legacy:
        settings = {**settings, "hyperparameters": {**legacy, **settings.get("hyperparameters", {})}}
    return method_type, settings, sent_as


def _place_hyperparameters(
    method_type: str, hyper: dict[str, Any], spec: dict[str, Any], sent_as: dict[str, str], origins: dict[str, str]
) -> float | None:
    """Route each hyperparameter into the spec, noting in `origins` the spec path -> the field the user sent;
    returns the learning-rate multiplier, if any."""
    method_fields = set(METHOD_CLASSES[method_type].model_fields) - {"type"}
    multiplier = None
    for name, value in hyper.items():
        param = sent_as.get(name, f"method.{method_type}.hyperparameters.{name}")
        if value == "auto":
            continue
        if name == "learning_rate_multiplier":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise bad_request(f"{param}: must be a positive number or 'auto'", param)
            multiplier = float(value)
            continue
        if name in OPENAI_HYPERPARAMETERS:
            # OpenAI's schema (and its SDK's job type) takes a whole number or "auto": "3" or 1.5 would be
            # coerced or stored and read back as a type the SDK warns about on every retrieve.
            if not isinstance(value, int) or isinstance(value, bool):
                hint = " (fractional epochs: spec.training.epochs)" if name == "n_epochs" else ""
                raise bad_request(f"{param}: must be a whole number or 'auto'{hint}", param)
            section, field = OPENAI_HYPERPARAMETERS[name]
            spec[section][field] = value
            origins[f"{section}.{field}"] = param
        elif name in method_fields:
            spec["method"][name] = value
            origins[f"method.{method_type}.{name}"] = param  # pydantic's path through the tagged union
        elif name in TrainingSpec.model_fields:
            spec["training"][name] = value
            origins[f"training.{name}"] = param
        else:
            raise bad_request(f"{param}: unknown field", param)
    return multiplier


# A checkpoint's `fine_tuned_model_checkpoint` name (schemas.CheckpointPublic): `<fine_tuned_model>:ckpt-step-N`.
CHECKPOINT_NAME = re.compile(r":ckpt-step-\d+$")
# What a model field loads, for ModelReferences.resolve.
POLICY, REWARD_MODEL = "policy", "reward_model"


class PendingJob(NamedTuple):
    """A pipeline stage created in the same request, not yet in the database."""

    id: str
    method: str


class ModelReferences:
    """Resolves model names that point at other jobs; collects the jobs this one must wait for."""

    def __init__(self, db: AsyncDatabase, project: Project, pending: dict[str, PendingJob] | None = None):
        self.db, self.project = db, project
        self.pending = pending or {}  # output names of not-yet-inserted jobs (pipeline stages) -> those jobs
        self.depends_on: list[str] = []

    async def resolve(self, name: str, param: str, loads_as: str | None = POLICY) -> str:
        """The name the spec should carry: another job's output name, or `name` checked (check_model_name).

        A job's output must be the kind of model the field loads (`loads_as`: POLICY, REWARD_MODEL, or None
        for either, as a reward model may start from an SFT model or from another reward model): a reward_model
        job's output is a sequence classifier, which PPO scores with and no policy stage can generate from;
        every other job's output is a causal LM with no reward head (as a reward model it would score with a
        random one)."""
        if name in self.pending:
            _check_model_kind(name, self.pending[name], param, loads_as)
            self._add(self.pending[name].id)
            return name
        looks_like_job = name.startswith(("ftjob-", "ft:", "ft-"))
        if looks_like_job and CHECKPOINT_NAME.search(name):
            raise ApiError(400, f"{param}: '{name}' is a checkpoint; alignd trains from a job's fine_tuned_model, "
                           "not from its intermediate checkpoints (yet): name the finished job's model",
                           param=param, code="checkpoint_not_a_model")
        job = await find_job_by_output(self.db, self.project.id, name) if looks_like_job else None
        if job is None:
            if looks_like_job:
                raise ApiError(400, f"{param}: no job or fine-tuned model '{name}' in this project", param=param,
                               code="model_not_found")
            return check_model_name(name, param)
        _check_model_kind(name, job, param, loads_as)
        if job.status in ("failed", "cancelled"):
            raise bad_request(f"{param}: input job '{job.id}' is {job.status}", param, code="dependency_failed")
        if job.status != "succeeded":
            self._add(job.id)
        elif job.fine_tuned_model and not await model_registered(self.db, self.project.id, job.fine_tuned_model):
            raise ApiError(400, f"{param}: the model '{job.fine_tuned_model}' of job '{job.id}' was deleted",
                           param=param, code="model_not_found")
        return job.fine_tuned_model or job.output_model

    def _add(self, job_id: str) -> None:
        if job_id not in self.depends_on:
            self.depends_on.append(job_id)


def _check_model_kind(name: str, job: JobOutput | PendingJob, param: str, loads_as: str | None) -> None:
    is_reward_model = job.method == "reward_model"
    if loads_as == REWARD_MODEL and not is_reward_model:
        raise bad_request(f"{param}: '{name}' is the output of {job.method} job '{job.id}', not of a reward_model "
                          "job; PPO scores with a reward model", param, code="wrong_model_kind")
    if loads_as == POLICY and is_reward_model:
        raise bad_request(f"{param}: '{name}' is the output of reward_model job '{job.id}', a scoring model; "
                          "name it as PPO's reward model (method.ppo.reward_model), not as the model to train",
                          param, code="wrong_model_kind")


def output_model_name(model: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<suffix>:<job id>`` (OpenAI's pattern); chained jobs keep the first base's name."""
    base = model.split(":")[1] if model.startswith("ft:") else model.rstrip("/").rsplit("/", 1)[-1]
    base = base.replace(":", "-") or "model"
    return f"ft:{base}:{suffix}:{job_id}" if suffix else f"ft:{base}:{job_id}"


def _input_files(spec: JobSpec) -> list[tuple[str, str]]:
    """A spec's input files in the order they are checked, each with the request field that named it."""
    train = [(file_id, "training_file" if index == 0 else "spec.data.train_files")
             for index, file_id in enumerate(spec.data.train_files)]
    return train + [(file_id, "validation_file") for file_id in spec.data.eval_files]


def _check_format(data_format: str, method_type: str, param: str) -> None:
    try:
        check_method_accepts(method_type, data_format)
    except DataFormatError as error:
        raise bad_request(f"{param}: {error.reason}", param, code="unsuitable_file_format") from None


async def check_input_files(db: AsyncDatabase, project: Project, spec: JobSpec, method_type: str) -> None:
    """Every input file exists in the project, is not deleted and holds data the method trains on; else 400 naming
    the first that does not."""
    for file_id, param in _input_files(spec):
        data_format = await file_format(db, project.id, file_id)
        if data_format is None:
            raise ApiError(400, f"{param}: no file '{file_id}' in this project", param=param, code="file_not_found")
        _check_format(data_format, method_type, param)


async def recheck_input_files(db: AsyncDatabase, project: Project, job: NewJob) -> None:
    """After queue.InputFileMissing: the 400 naming the file that is gone (check_input_files on the job's spec)."""
    await check_input_files(db, project, JobSpec.model_validate(job.spec), job.method)


def _deferred_file_checks(project: Project, spec: JobSpec, method_type: str) -> list[str] | None:
    """The input files, if their formats are known and suit the method: only their existence is left to check,
    which the insert does (NewJob.live_files), saving a round trip per file. None: check them now."""
    files = _input_files(spec)
    formats = [known_file_format(project.id, file_id) for file_id, _ in files]
    if None in formats:
        return None
    try:
        for data_format, (_, param) in zip(formats, files):
            _check_format(data_format, method_type, param)
    except ApiError:
        return None  # check_input_files gives the error a missing file before it would have had
    return [file_id for file_id, _ in files]


async def build_new_job(db: AsyncDatabase, project: Project, body: JobCreate, job_id: str,
                        references: ModelReferences | None = None, defer_file_checks: bool = False) -> NewJob:
    """Validate `body` completely and return what the queue stores; raises ApiError(400) on any problem.

    `defer_file_checks`: input files whose formats are already known are left in NewJob.live_files for the insert
    to find (enqueue raises queue.InputFileMissing when one is gone; then call check_input_files for the 400)."""
    references = references or ModelReferences(db, project)
    _refuse_non_finite_numbers(body)
    method_type, settings, sent_as = _method_settings(body.method, body.hyperparameters)
    if method_type not in METHOD_CLASSES:
        if method_type in ("orpo", "kto", "grpo"):
            raise bad_request(f"method.type: '{method_type}' is not available yet; use one of "
                              f"{', '.join(IMPLEMENTED_METHODS)}", "method.type", code="method_not_available")
        raise bad_request(f"method.type: unknown method '{method_type}'", "method.type")
    if body.integrations:
        # Accepting and ignoring them would let a user wait for Weights & Biases runs that never appear.
        kinds = sorted({str(item.get("type")) for item in body.integrations})
        raise bad_request(f"integrations: alignd sends no integrations ({', '.join(kinds)}); leave the field out "
                          "and follow the job at GET /v1/fine_tuning/jobs/{id}/metrics or on the dashboard",
                          "integrations", code="integration_not_supported")
    hyper = settings.pop("hyperparameters", None) or {}
    if not isinstance(hyper, dict):
        raise bad_request(f"method.{method_type}.hyperparameters must be an object",
                          f"method.{method_type}.hyperparameters")

    model_loads_as = None if method_type == "reward_model" else POLICY
    model_name = await references.resolve(body.model, "model", model_loads_as)
    spec: dict[str, Any] = {
        "method": {"type": method_type}, "model": {"name_or_path": model_name},
        "data": {"train_files": [body.training_file],
                 "eval_files": [body.validation_file] if body.validation_file else []},
        "training": {}, "distribution": {}, "output": {},
    }
    if method_type == "ppo":
        reward_name = settings.pop("reward_model", None)
        if reward_name is not None:
            if not isinstance(reward_name, str):
                raise bad_request("method.ppo.reward_model must be a string", "method.ppo.reward_model")
            settings["reward"] = {"type": "model",
                                  "model": await references.resolve(reward_name, "method.ppo.reward_model",
                                                                      loads_as=REWARD_MODEL)}
        elif isinstance(settings.get("reward"), dict) and isinstance(settings["reward"].get("model"), str):
            settings["reward"]["model"] = await references.resolve(settings["reward"]["model"],
                                                                   "method.ppo.reward.model", loads_as=REWARD_MODEL)
    for name, value in settings.items():
        if name not in METHOD_CLASSES[method_type].model_fields:
            raise bad_request(f"method.{method_type}.{name}: unknown field", f"method.{method_type}.{name}")
        spec["method"][name] = value
    # Spec path -> the field the user sent there, so a spec validation error names what the user wrote.
    origins: dict[str, str] = {}
    multiplier = _place_hyperparameters(method_type, hyper, spec, sent_as, origins)
    if body.lora is not None and body.lora is not False:
        spec["model"]["lora"] = {} if body.lora is True else body.lora
        origins["model.lora"] = "lora"
    for name, (section, field) in EXTENSION_TARGETS.items():
        value = getattr(body, name)
        if value is not None:
            spec[section][field] = value
            origins[f"{section}.{field}"] = name
    if body.seed is not None:
        spec["training"]["seed"] = body.seed
        origins["training.seed"] = "seed"
    if body.spec:
        spec = _deep_merge(spec, body.spec)
        await _resolve_overridden_models(spec, body.spec, references, model_loads_as)

    validated = _validate_spec(spec, origins, body.spec)
    if multiplier is not None:
        validated = _validate_spec(_deep_merge(validated.model_dump(mode="json"), {
            "training": {"learning_rate": validated.training.learning_rate * multiplier}}), origins, None)

    live_files = _deferred_file_checks(project, validated, method_type) if defer_file_checks else None
    if live_files is None:
        await check_input_files(db, project, validated, method_type)
    try:
        _check_memory(validated)
        _check_reward_function(validated, origins, body.spec)
    except ApiError:
        if live_files is not None:  # a missing file is the error a client heard first
            await check_input_files(db, project, validated, method_type)
        raise

    return NewJob(
        id=job_id, project_id=project.id, spec=validated.model_dump(mode="json"), method=method_type,
        model=body.model, request={"integrations": body.integrations},
        training_file=body.training_file, validation_file=body.validation_file, suffix=body.suffix,
        seed=validated.training.seed, metadata=body.metadata, priority=body.priority,
        max_attempts=body.max_attempts, depends_on=list(references.depends_on),
        output_model=output_model_name(model_name, body.suffix, job_id), package_versions=dict(package_versions()),
        live_files=live_files or [],
    )


def _refuse_non_finite_numbers(body: JobCreate) -> None:
    """JSON has no NaN or Infinity, but Python's parser reads them: refused here, naming the field, before a
    bound check reports them as 'must be <= 1' or one reaches a loss."""
    for name in type(body).model_fields:
        path = _non_finite_path(getattr(body, name), name)
        if path is not None:
            raise bad_request(f"{path}: must be a finite number (NaN and Infinity are not JSON numbers)", path)


def _non_finite_path(value: Any, path: str) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        children = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for child_path, item in children if (found := _non_finite_path(item, child_path))), None)


async def _resolve_overridden_models(spec: dict[str, Any], override: dict[str, Any],
                                     references: ModelReferences, model_loads_as: str | None) -> None:
    """Model names a raw `spec` override sets get the same checks and chaining as the `model` field."""
    model = override.get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        spec["model"]["name_or_path"] = await references.resolve(model["name_or_path"], "spec.model.name_or_path",
                                                                 model_loads_as)
    reward = override.get("method", {}).get("reward") if isinstance(override.get("method"), dict) else None
    if isinstance(reward, dict) and isinstance(reward.get("model"), str):
        spec["method"]["reward"]["model"] = await references.resolve(reward["model"], "spec.method.reward.model",
                                                                     loads_as=REWARD_MODEL)


def _check_reward_function(spec: JobSpec, origins: dict[str, str], override: dict[str, Any] | None) -> None:
    """A reward function is code the workers import and run: a project key may name the built-in ones and those
    the operator allowed (ALIGND_REWARD_FUNCTIONS), never any importable module (`alignd train` on one's own
    machine runs any)."""
    reward = getattr(spec.method, "reward", None)
    if reward is None or reward.type != "function":
        return
    allowed = set(BUILTIN_FUNCTIONS) | {name.strip() for name in get_settings().reward_functions.split(",")
                                        if name.strip()}
    if reward.function not in allowed:
        param = _param_sent("method.ppo.reward.function", origins, override)
        raise ApiError(403, f"{param}: '{reward.function}' is not a reward function this server runs; allowed: "
                       f"{', '.join(sorted(allowed))} (an operator adds more with ALIGND_REWARD_FUNCTIONS)",
                       param=param, code="reward_function_not_allowed")


def _check_memory(spec: JobSpec) -> None:
    """Admission control: a GPU job whose memory estimate exceeds the GPU is refused before it is queued."""
    if spec.distribution.gpus_per_worker <= 0:
        return  # CPU jobs use host memory, which the planner does not model
    from alignment_core.planning.model_shape import ModelConfigUnavailable
    from alignment_core.planning.recommend import ModelDoesNotFit, check_fits

    try:
        check_fits(spec, get_settings().gpu_type)
    except ModelConfigUnavailable:
        return  # a hub id without a cached config, or an upstream job's output: the stage itself will tell
    except ModelDoesNotFit as error:
        raise ApiError(400, f"model: {error}", param="model", code="model_does_not_fit") from None


def _validate_spec(spec: dict[str, Any], origins: dict[str, str], override: dict[str, Any] | None) -> JobSpec:
    try:
        return JobSpec.model_validate(spec)
    except ValidationError as error:
        message, location = describe_validation_error(error)
        param = _param_sent(location, origins, override)
        if location and param != location and message.startswith(f"{location}:"):
            message = param + message[len(location):]
        raise ApiError(400, message, param=param, code="invalid_spec") from None


def _param_sent(location: str | None, origins: dict[str, str], override: dict[str, Any] | None) -> str | None:
    """The request field behind a spec path: the `spec` override if it set the path, else the field placed
    there (longest matching prefix in `origins`), else `spec.<path>` when an override was sent."""
    if not location:
        return location
    parts = location.split(".")
    overridden = _path_in(override, parts) if override else None
    if overridden:
        return f"spec.{overridden}"
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in origins:
            return ".".join([origins[prefix], *parts[end:]])
    return f"spec.{location}" if override else location


def _path_in(override: dict[str, Any], parts: list[str]) -> str | None:
    """The path as the override wrote it, if it holds it (pydantic's `method.<type>.x` is `method.x` there)."""
    if parts[:1] == ["method"] and len(parts) > 2:
        parts = ["method", *parts[2:]]
    node: Any = override
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return ".".join(parts)


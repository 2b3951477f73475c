"""Run one attempt of one stage on the Ray cluster as a Ray Train TorchTrainer.

The dispatcher is the driver: `run_attempt` blocks in `TorchTrainer.fit()` while the dispatcher's
heartbeat thread drains the attempt's `JobChannel`. Every train worker builds a `RayStageContext`
and calls `alignment_core.stages.run_stage`; rank 0 hands the StageResult (or the error) back
through the channel, because a Train V2 `Result` carries neither.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from alignment_core.specs import JobSpec

log = logging.getLogger(__name__)

# Passed on to train workers, which may run on other nodes with another environment.
FORWARDED_ENV = (
    "ALIGND_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)
# Errors a new attempt cannot fix: the same input fails the same way. Anything else (a worker
# killed, a node lost) is worth another attempt.
RETRYABLE_ERRORS = (ConnectionError, TimeoutError)


@dataclass
class AttemptOutcome:
    """How an attempt ended: 'completed', 'cancelled', 'paused' or 'failed'."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error_message: str | None = None
    error_type: str | None = None
    retryable: bool = False


def describe_error(error: BaseException) -> dict[str, Any]:
    """The error as the job will show it: type, one-line message, where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(error).strip() or repr(error)
    return {
        "type": type(error).__name__,
        "message": f"{type(error).__name__}: {message}{where}",
        "retryable": isinstance(error, RETRYABLE_ERRORS),
    }


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: build the context, run the stage, hand the result back."""
    from alignment_core.stages import run_stage
    from services.workers.ray_context import AttemptFenced, RayStageContext

    train_context = ray.train.get_context()
    channel = config["channel"]
    reward_handle = None
    if config.get("reward_application"):
        from ray import serve

        reward_handle = serve.get_app_handle(config["reward_application"])
    context = RayStageContext(
        storage_root=Path(config["storage_root"]),
        job_id=config["job_id"],
        attempt=config["attempt"],
        channel=channel,
        rank=train_context.get_world_rank(),
        world_size=train_context.get_world_size(),
        reward_handle=reward_handle,
    )
    spec = JobSpec.model_validate(config["spec"])
    if context.rank == 0:
        channel.push_started.remote({"host": socket.gethostname(), "pid": os.getpid(),
                                     "world_size": context.world_size})
    try:
        result = run_stage(spec, context)
    except AttemptFenced:
        raise
    except BaseException as error:
        ray.get(channel.set_error.remote(describe_error(error)), timeout=30)
        raise
    if context.rank != 0:
        return
    summary = result.to_json()
    if config.get("demo_eval") and result.status == "completed" and result.model_dir is not None:
        from services.workers.demo_evaluation import demo_before_after

        try:
            summary["demo"] = demo_before_after(spec, config["start_model"], str(result.model_dir))
        except Exception as error:  # noqa: BLE001 - the stage succeeded; a missing table row must not fail it
            summary["demo"] = {"error": describe_error(error)["message"]}
    ray.get(channel.set_result.remote(summary), timeout=30)


def scaling_config(spec: JobSpec) -> ScalingConfig:
    """Workers and per-worker CPUs / GPUs straight from the spec's distribution section."""
    distribution = spec.distribution
    resources: dict[str, float] = {"CPU": distribution.cpus_per_worker}
    if distribution.gpus_per_worker > 0:
        resources["GPU"] = distribution.gpus_per_worker
    return ScalingConfig(
        num_workers=distribution.num_workers,
        use_gpu=distribution.gpus_per_worker > 0,
        resources_per_worker=resources,
    )


def run_attempt(
    spec: JobSpec,
    job_id: str,
    attempt: int,
    storage_root: Path,
    channel: Any,
    reward_application: str | None = None,
    demo_eval: bool = False,
) -> AttemptOutcome:
    """Fit the stage on the cluster and say how the attempt ended (never raises for stage errors)."""
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "job_id": job_id,
            "attempt": attempt,
            "storage_root": str(storage_root),
            "channel": channel,
            "reward_application": reward_application,
            "demo_eval": demo_eval,
            "start_model": spec.model.name_or_path,
        },
        scaling_config=scaling_config(spec),
        run_config=RunConfig(
            name=f"{job_id}-attempt-{attempt}",
            storage_path=str(Path(storage_root) / "ray"),
            # Retries belong to the job queue (with backoff and an attempt count), not to Ray Train.
            failure_config=FailureConfig(max_failures=0),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    fit_error: BaseException | None = None
    try:
        trainer.fit()
    except Exception as error:  # noqa: BLE001 - the channel usually knows the real cause
        fit_error = error
    try:
        result, error = ray.get(channel.outcome.remote(), timeout=30)
    except ray.exceptions.RayError:
        result, error = None, None
    if error is not None:
        return AttemptOutcome("failed", error_message=error["message"], error_type=error["type"],
                              retryable=error["retryable"])
    if fit_error is not None or result is None:
        reason = str(fit_error).strip().splitlines()[-1] if fit_error else "the stage returned no result"
        log.warning("job %s attempt %s: training failed outside the stage: %s", job_id, attempt, fit_error)
        return AttemptOutcome("failed", error_message=f"training failed: {reason}",
                              error_type=type(fit_error).__name__ if fit_error else "NoResult", retryable=True)
    return AttemptOutcome(result["status"], result=result)

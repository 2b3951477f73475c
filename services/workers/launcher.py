"""Run one attempt of one stage on the Ray cluster as a Ray Train TorchTrainer.

The dispatcher is the driver: `run_attempt` blocks in `TorchTrainer.fit()` while the dispatcher's
heartbeat thread drains the attempt's `JobChannel`. Every train worker builds a `RayStageContext`
and calls `alignment_core.stages.run_stage`; rank 0 hands the StageResult (or the error) back
through the channel, because a Train V2 `Result` carries neither.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from alignment_core.specs import JobSpec
from services.workers.warm_worker import WarmWorkerPool, fits_warm_worker

log = logging.getLogger(__name__)

# Passed on to train workers, which may run on other nodes with another environment.
FORWARDED_ENV = (
    "ALIGND_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)
# Errors a new attempt cannot fix: the same input fails the same way. Anything else (a worker
# killed, a node lost) is worth another attempt.
RETRYABLE_ERRORS = (ConnectionError, TimeoutError)
# Where a collective (gloo / NCCL) raises when a peer rank is gone: the surviving ranks' error after a worker loss.
DISTRIBUTED_SOURCE = f"{os.sep}torch{os.sep}distributed{os.sep}"


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
        "retryable": isinstance(error, RETRYABLE_ERRORS) or _collective_failed(error, frames),
    }


def _collective_failed(error: BaseException, frames: traceback.StackSummary) -> bool:
    """A collective operation broke (a peer rank died, the network dropped): gloo raises a bare RuntimeError
    from torch.distributed, NCCL a DistError; another attempt with a new worker group can succeed."""
    try:
        from torch.distributed import DistError
    except ImportError:  # torch without distributed support: no collectives to break
        return False
    if isinstance(error, DistError):
        return True
    return isinstance(error, RuntimeError) and bool(frames) and DISTRIBUTED_SOURCE in frames[-1].filename


def worker_lost(run_error: BaseException | None) -> str | None:
    """How a Ray worker process of the attempt was lost (killed, OOM-killed, its node gone), as read from what the
    warm worker's call or `fit()` raised; None when every worker process lived to report its own outcome."""
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    seen: list[BaseException] = []
    pending = [run_error] if run_error is not None else []
    while pending:
        error = pending.pop()
        if error is None or any(error is earlier for earlier in seen):
            continue
        seen.append(error)
        if isinstance(error, (ray.exceptions.RayActorError, WorkerHealthCheckFailedError)):
            pid = re.search(r"\bpid: (\d+)", str(error))
            return "a Ray worker process running the stage died" + (f" (pid {pid.group(1)})" if pid else "")
        if isinstance(error, WorkerGroupError):
            pending.extend(error.worker_failures.values())
        if isinstance(error, ControllerError):
            pending.append(error.controller_failure)
        pending.extend([error.__cause__, error.__context__])
    return None


def run_stage_in_worker(config: dict[str, Any], rank: int, world_size: int) -> None:
    """Build the context, run the stage, hand the result (rank 0) or the error back through the channel."""
    from alignment_core.stages import run_stage
    from services.workers.ray_context import AttemptFenced, RayStageContext

    channel = config["channel"]
    if rank == 0:
        channel.mark.remote("entered", time.time())
    reward_handle = None
    if config.get("reward_application"):
        from ray import serve

        reward_handle = serve.get_app_handle(config["reward_application"])
    context = RayStageContext(
        storage_root=Path(config["storage_root"]),
        job_id=config["job_id"],
        attempt=config["attempt"],
        channel=channel,
        rank=rank,
        world_size=world_size,
        reward_handle=reward_handle,
    )
    spec = JobSpec.model_validate(config["spec"])
    if context.rank == 0:
        channel.push_started.remote(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "world_size": context.world_size,
                "runner": config.get("runner", "ray_train"),
            }
        )
    try:
        result = run_stage(spec, context)
    except AttemptFenced:
        raise
    except BaseException as error:
        ray.get(channel.set_error.remote(describe_error(error)), timeout=30)
        raise
    if context.rank != 0:
        return
    channel.mark.remote("stage_returned", time.time())
    summary = result.to_json()
    if config.get("demo_eval") and result.status == "completed" and result.model_dir is not None:
        from services.workers.demo_evaluation import demo_before_after

        try:
            summary["demo"] = demo_before_after(spec, config["start_model"], str(result.model_dir))
        except Exception as error:  # noqa: BLE001 - the stage succeeded; a missing table row must not fail it
            summary["demo"] = {"error": describe_error(error)["message"]}
    ray.get(channel.set_result.remote(summary), timeout=30)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: the rank and world size come from Ray Train."""
    train_context = ray.train.get_context()
    run_stage_in_worker(config, train_context.get_world_rank(), train_context.get_world_size())


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


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def run_attempt(
    spec: JobSpec,
    job_id: str,
    attempt: int,
    storage_root: Path,
    channel: Any,
    reward_application: str | None = None,
    demo_eval: bool = False,
    warm_pool: WarmWorkerPool | None = None,
) -> AttemptOutcome:
    """Run the stage on the cluster and say how the attempt ended (never raises for stage errors).

    A single-worker CPU stage runs on the dispatcher's warm worker when it has a pool; anything else
    is one Ray Train `TorchTrainer.fit()`.
    """
    config = {
        "spec": spec.model_dump(mode="json"),
        "job_id": job_id,
        "attempt": attempt,
        "storage_root": str(storage_root),
        "channel": channel,
        "reward_application": reward_application,
        "demo_eval": demo_eval,
        "start_model": spec.model.name_or_path,
    }
    channel.mark.remote("launched", time.time())
    run_error: BaseException | None = None
    if warm_pool is not None and fits_warm_worker(spec):
        try:
            stopped_before_start = warm_pool.run(
                {**config, "runner": "warm_worker"}, spec.distribution.cpus_per_worker, channel
            )
        except Exception as error:  # noqa: BLE001 - the channel usually knows the real cause
            stopped_before_start, run_error = None, error
        if stopped_before_start is not None:
            return AttemptOutcome("paused" if stopped_before_start == "pause" else "cancelled")
    else:
        run_error = _fit(config, spec, job_id, attempt, storage_root)
    try:
        result, error = ray.get(channel.outcome.remote(), timeout=30)
    except ray.exceptions.RayError:
        result, error = None, None
    lost = worker_lost(run_error)
    if error is not None and lost:
        # The error a surviving rank reported came after its peer died (a broken collective, say): the loss is the
        # cause, and the next attempt, on new workers, resumes from the newest checkpoint.
        log.warning("job %s attempt %s: %s; the stage then failed: %s", job_id, attempt, lost, error["message"])
        return AttemptOutcome(
            "failed", error_message=f"{lost}; then {error['message']}", error_type="WorkerLost", retryable=True
        )
    if error is not None:
        return AttemptOutcome(
            "failed", error_message=error["message"], error_type=error["type"], retryable=error["retryable"]
        )
    if run_error is not None or result is None:
        reason = lost or (str(run_error).strip().splitlines()[-1] if run_error else "the stage returned no result")
        log.warning("job %s attempt %s: training failed outside the stage: %s", job_id, attempt, run_error)
        return AttemptOutcome(
            "failed",
            error_message=f"training failed: {reason}",
            error_type="WorkerLost" if lost else type(run_error).__name__ if run_error else "NoResult",
            retryable=True,
        )
    return AttemptOutcome(result["status"], result=result)


def _fit(config: dict[str, Any], spec: JobSpec, job_id: str, attempt: int, storage_root: Path) -> BaseException | None:
    """One TorchTrainer.fit() for the attempt; the error it raised, if any."""
    env = forwarded_env()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling_config(spec),
        run_config=RunConfig(
            name=f"{job_id}-attempt-{attempt}",
            storage_path=str(Path(storage_root) / "ray"),
            # Retries belong to the job queue (with backoff and an attempt count), not to Ray Train.
            failure_config=FailureConfig(max_failures=0),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    try:
        trainer.fit()
    except Exception as error:  # noqa: BLE001 - the channel usually knows the real cause
        return error
    return None

"""The StageContext a stage sees inside a Ray Train worker.

Metrics and checkpoints travel to the dispatcher through the attempt's `JobChannel` actor while the
stage runs (per-step `ray.train.report` would be a barrier across workers and only reports carrying
a checkpoint reach `Result.metrics`). Checkpoints are written straight into shared artifact storage,
one folder per attempt, so a stale attempt can never overwrite the files a newer attempt resumes from.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from alignment_core.context import (
    CHECKPOINT_PREFIX,
    StopReason,
    checkpoint_step,
    latest_checkpoint,
    mark_checkpoint_complete,
)
from services.workers.job_channel import FENCED

# How often should_stop asks the channel; a stage calls it every step, often many times a second.
STOP_POLL_INTERVAL_S = 0.5


class AttemptFenced(RuntimeError):
    """This attempt lost its lease (another attempt may own the job now): stop without writing."""


def job_root(storage_root: Path, job_id: str) -> Path:
    return Path(storage_root) / "jobs" / job_id


def attempt_checkpoints_root(storage_root: Path, job_id: str, attempt: int) -> Path:
    return job_root(storage_root, job_id) / f"attempt-{attempt}" / "checkpoints"


def newest_checkpoint(storage_root: Path, job_id: str) -> Path | None:
    """The complete checkpoint with the highest step over every attempt of the job."""
    candidates = [
        found
        for root in job_root(storage_root, job_id).glob("attempt-*/checkpoints")
        if (found := latest_checkpoint(root)) is not None
    ]
    return max(candidates, key=checkpoint_step, default=None)


@dataclass
class RayStageContext:
    """StageContext for one train worker of one attempt; rank 0 speaks for the group."""

    storage_root: Path
    job_id: str
    attempt: int
    channel: Any  # ActorHandle[JobChannel]
    rank: int = 0
    world_size: int = 1
    reward_handle: Any = None  # DeploymentHandle of the job's reward model (PPO), if served
    _stop_checked_at: float = field(default=0.0, repr=False)
    _stop: str | None = field(default=None, repr=False)
    _marked: set[str] = field(default_factory=set, repr=False)

    @property
    def output_dir(self) -> Path:
        # Per attempt, like checkpoints: a fenced attempt's last writes never mix with the winner's.
        path = job_root(self.storage_root, self.job_id) / f"attempt-{self.attempt}" / "output"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def checkpoints_root(self) -> Path:
        return attempt_checkpoints_root(self.storage_root, self.job_id, self.attempt)

    def report(self, step: int, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            self._mark_once("first_report")
            self.channel.push_metrics.remote(step, {key: float(value) for key, value in metrics.items()})

    def plan_steps(self, total_steps: int) -> None:
        if self.rank == 0:
            self.channel.push_plan.remote(total_steps)

    def checkpoint_dir(self, step: int) -> Path:
        self._raise_if_fenced()
        path = self.checkpoints_root / f"{CHECKPOINT_PREFIX}{step}"
        if self.rank == 0 and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._raise_if_fenced()
        if self.rank != 0:
            return
        mark_checkpoint_complete(Path(path), step, metrics)
        clean = {key: float(value) for key, value in metrics.items()}
        # Waited for, so the dispatcher has it before the stage moves on (and before a pause returns).
        ray.get(self.channel.push_checkpoint.remote(step, str(path), clean), timeout=30)

    def resume_from(self) -> Path | None:
        self._mark_once("trainer_ready")  # stages ask once their trainer is built, just before training
        found = newest_checkpoint(self.storage_root, self.job_id)
        if found is not None and self.rank == 0:
            # The job's events say where a retried / resumed attempt picked up, not just that it ran again.
            self.channel.push_resumed.remote(checkpoint_step(found), str(found))
        return found

    def should_stop(self) -> StopReason | None:
        now = time.monotonic()
        if now - self._stop_checked_at >= STOP_POLL_INTERVAL_S:
            self._stop_checked_at = now
            try:
                self._stop = ray.get(self.channel.get_stop.remote(), timeout=10)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self._stop = FENCED  # the dispatcher is gone: nobody may record this attempt's work
        self._raise_if_fenced()
        return self._stop  # type: ignore[return-value]

    def _mark_once(self, name: str) -> None:
        if self.rank == 0 and name not in self._marked:
            self._marked.add(name)
            self.channel.mark.remote(name, time.time())

    def _raise_if_fenced(self) -> None:
        if self._stop == FENCED:
            raise AttemptFenced(f"job {self.job_id} attempt {self.attempt} lost its lease; stopping")

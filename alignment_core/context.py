"""The small object through which a stage talks to whoever runs it.

A stage never knows whether it runs under Ray Train, the CLI's local runner or a test: it reports
metrics, saves checkpoints into a folder the context hands out, asks where to resume from and asks
whether it should stop. ``LocalContext`` is the in-process implementation; the workers provide a Ray
one with the same methods.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

StopReason = Literal["cancel", "pause"]

CHECKPOINT_PREFIX = "checkpoint-"


@runtime_checkable
class StageContext(Protocol):
    """What a stage may ask of its runner."""

    output_dir: Path  # final model and stage outputs go here
    checkpoints_root: Path  # stages write `checkpoint-<step>` folders under it
    rank: int
    world_size: int

    def report(self, step: int, metrics: dict[str, float]) -> None:
        """Record metrics for an optimizer step (only rank 0's reports are kept)."""

    def plan_steps(self, total_steps: int) -> None:
        """The optimizer steps this run takes in all, once known (for progress and a finish estimate)."""

    def checkpoint_dir(self, step: int) -> Path:
        """A fresh folder to write the checkpoint of `step` into."""

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """Tell the runner that `path` now holds a complete checkpoint."""

    def resume_from(self) -> Path | None:
        """The newest complete checkpoint to resume from, or None to start fresh."""

    def should_stop(self) -> StopReason | None:
        """'cancel' or 'pause' when the stage must stop at the next safe point."""


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under `root` (marked by a `complete` file)."""
    if not root.is_dir():
        return None
    complete = [
        path for path in root.glob(f"{CHECKPOINT_PREFIX}*")
        if (path / "complete").exists() and path.name[len(CHECKPOINT_PREFIX):].isdigit()
    ]
    if not complete:
        return None
    return max(complete, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def mark_checkpoint_complete(path: Path, step: int, metrics: dict[str, float]) -> None:
    """Written last, so a checkpoint cut short by a crash is never taken for a complete one."""
    (path / "complete").write_text(json.dumps({"step": step, "metrics": metrics, "time": time.time()}))


@dataclass
class LocalContext:
    """Runs a stage in this process, writing metrics.jsonl and checkpoints under `output_dir`."""

    output_dir: Path
    resume: bool = True
    stop_after_step: int | None = None
    stop_reason: StopReason = "pause"
    rank: int = 0
    world_size: int = 1
    on_report: list = field(default_factory=list)
    last_step: int = 0
    total_steps: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # Reports are idempotent: a resumed stage may report a step again (backfilled from a checkpoint).
        self._written: set[tuple[int, tuple[str, ...]]] = set()
        metrics_file = self.output_dir / "metrics.jsonl"
        if self.resume and metrics_file.exists():
            for line in metrics_file.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._written.add((row["step"], tuple(sorted(key for key in row if key != "step"))))

    @property
    def checkpoints_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.last_step = max(self.last_step, step)
        if self.rank != 0:
            return
        written = (step, tuple(sorted(metrics)))
        if written in self._written:
            return
        self._written.add(written)
        row = {"step": step, **{key: float(value) for key, value in metrics.items()}}
        self.history.append(row)
        with (self.output_dir / "metrics.jsonl").open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        for callback in self.on_report:
            callback(step, metrics)

    def plan_steps(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def checkpoint_dir(self, step: int) -> Path:
        path = self.checkpoints_root / f"{CHECKPOINT_PREFIX}{step}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def checkpoint_saved(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        mark_checkpoint_complete(path, step, metrics)

    def resume_from(self) -> Path | None:
        return latest_checkpoint(self.checkpoints_root) if self.resume else None

    def should_stop(self) -> StopReason | None:
        if self.stop_after_step is not None and self.last_step >= self.stop_after_step:
            return self.stop_reason
        return None

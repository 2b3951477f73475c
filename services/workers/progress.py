"""The progress of a running attempt as the job shows it: total steps, a finish estimate, live checkpoints."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from services.store import queue

# The estimate is rewritten at most this often: one UPDATE a few seconds is plenty for a clock in minutes.
STORE_INTERVAL_S = 5.0


@dataclass
class StepPace:
    """Estimates the finish from the pace of the steps since the first one this attempt reported.

    Timing starts at the first reported step, not at the plan, so model loading, compilation and a resume's
    catch-up do not count as training pace."""

    sessions: Any
    job_id: str
    total_steps: int | None = None
    _first: tuple[int, float] | None = None
    _stored_at: float = 0.0

    def planned(self, total_steps: int) -> None:
        self.total_steps, self._first = total_steps, None
        queue.record_progress(self.sessions, self.job_id, total_steps, None)

    def step_done(self, step: int, now: float | None = None) -> None:
        if self.total_steps is None:
            return
        now = time.time() if now is None else now
        if self._first is None:
            self._first = (step, now)
            return
        first_step, first_time = self._first
        if step <= first_step or now - self._stored_at < STORE_INTERVAL_S:
            return
        seconds_per_step = (now - first_time) / (step - first_step)
        estimate = now + seconds_per_step * max(self.total_steps - step, 0)
        queue.record_progress(self.sessions, self.job_id, self.total_steps, estimate)
        self._stored_at = now


def forget_pruned_checkpoints(sessions: Any, job_id: str, newest_path: str) -> None:
    """After a checkpoint is saved, drop the job's listed checkpoints whose folders the trainer has deleted
    (save_total_limit keeps the newest few): they were listed, and offered as resume points, long after.

    Only when this process sees the newest checkpoint's folder: a dispatcher that does not mount the workers'
    storage must not take every checkpoint for deleted."""
    if not os.path.isdir(newest_path):
        return
    gone = [path for path in queue.checkpoint_paths(sessions, job_id)
            if path != newest_path and not os.path.isdir(path)]
    if gone:
        queue.forget_checkpoints(sessions, job_id, gone)

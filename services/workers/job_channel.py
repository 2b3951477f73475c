"""A small Ray actor between one running attempt's train workers and the dispatcher that owns it.

Train workers push metrics, checkpoints, the stage result or its error into it; the dispatcher's
heartbeat thread drains it into the store and writes the cancel / pause / fence flag back. The
actor is owned by the dispatcher (the Ray driver), so it dies with it: a stale attempt can never
reach the store through a channel whose dispatcher has lost the lease or died.
"""

from __future__ import annotations

from typing import Any

import ray

# Stop reasons besides the stage's own 'cancel' / 'pause': the attempt lost its lease and must die
# without writing anything more.
FENCED = "fenced"


@ray.remote(num_cpus=0, max_restarts=0)
class JobChannel:
    """Mailbox of one attempt; every method is cheap and never blocks."""

    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.stop_reason: str | None = None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.reward_application: str | None = None
        self.marks: dict[str, float] = {}

    def push_started(self, details: dict[str, Any]) -> None:
        self.events.append(("started", details))

    def push_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.events.append(("metrics", {"step": step, "metrics": metrics}))

    def push_plan(self, total_steps: int) -> None:
        self.events.append(("plan", {"total_steps": total_steps}))

    def push_resumed(self, step: int, path: str) -> None:
        self.events.append(("resumed", {"step": step, "path": path}))

    def push_checkpoint(self, step: int, path: str, metrics: dict[str, float]) -> None:
        self.events.append(("checkpoint", {"step": step, "path": path, "metrics": metrics}))

    def mark(self, name: str, at: float) -> None:
        """A start-up / finish milestone (epoch seconds); the first one of a name counts."""
        self.marks.setdefault(name, at)

    def timeline(self) -> dict[str, float]:
        return dict(self.marks)

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        events, self.events = self.events, []
        return events

    def set_stop(self, reason: str) -> None:
        # A fence is final; a later 'pause' must not soften it.
        if self.stop_reason != FENCED:
            self.stop_reason = reason

    def get_stop(self) -> str | None:
        return self.stop_reason

    def set_result(self, result: dict[str, Any]) -> None:
        self.result = result

    def set_error(self, error: dict[str, Any]) -> None:
        if self.error is None:  # the first failing rank tells the real story
            self.error = error

    def outcome(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return self.result, self.error

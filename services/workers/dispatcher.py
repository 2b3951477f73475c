"""The `alignd worker` loop: claim a job with a lease, run its stage on Ray, record how it ended.

One job at a time per dispatcher. While the stage runs, a heartbeat thread renews the lease, turns
cancel / pause flags into the attempt channel's stop reason, and moves the channel's metrics and
checkpoints into the store. Writes happen only while the lease holds; a lost lease fences the
attempt (its train workers stop at the next step and nothing more of it is recorded).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.store import queue
from services.store.blobs import BlobStore
from services.store.lifecycle import LeaseLost, error_object
from services.workers.demo_evaluation import is_demo_job
from services.workers.pipeline import InputNotReady, resolve_spec, reward_model_to_serve
from services.workers.progress import StepPace, forget_pruned_checkpoints

log = logging.getLogger(__name__)

DRAIN_INTERVAL_S = 0.5  # how fresh live metrics are in the store
MAX_RENEW_INTERVAL_S = 2.0  # cancel / pause are seen within this (plus one training step)


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Heartbeat:
    """Renews one attempt's lease and pumps its channel into the store, in a background thread."""

    sessions: Any
    job_id: str
    worker_id: str
    attempt: int
    lease_seconds: float
    channel: Any
    lost: bool = False
    stop_requested: str | None = None
    first_metric_stored_at: float | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.pace = StepPace(self.sessions, self.job_id)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            self._renew()  # the lease must still hold for the last writes
            self._drain()

    def _run(self) -> None:
        renew_every = min(self.lease_seconds / 3, MAX_RENEW_INTERVAL_S)
        last_renew = time.monotonic()
        while not self._done.wait(DRAIN_INTERVAL_S) and not self.lost:
            try:
                if time.monotonic() - last_renew >= renew_every:
                    self._renew()
                    last_renew = time.monotonic()
                if not self.lost:
                    self._drain()
            except Exception:  # noqa: BLE001 - a store hiccup must not kill the heartbeat; the lease decides
                log.exception("heartbeat of job %s failed; retrying", self.job_id)

    def _renew(self) -> None:
        import ray

        from services.workers.job_channel import FENCED

        try:
            flags = queue.renew_lease(self.sessions, self.job_id, self.worker_id, self.attempt, self.lease_seconds)
        except LeaseLost:
            self.lost = True
            log.warning("job %s attempt %s lost its lease; fencing the attempt", self.job_id, self.attempt)
            self.channel.set_stop.remote(FENCED)
            return
        reason = "cancel" if flags.cancel_requested else "pause" if flags.pause_requested else None
        if reason and reason != self.stop_requested:
            self.stop_requested = reason
            ray.get(self.channel.set_stop.remote(reason))
            queue.record_event(self.sessions, self.job_id, f"Stopping the stage ({reason} requested)")

    def _drain(self) -> None:
        import ray

        for kind, payload in ray.get(self.channel.drain.remote(), timeout=30):
            if kind == "metrics":
                queue.record_metrics(self.sessions, self.job_id, payload["step"], payload["metrics"])
                self.first_metric_stored_at = self.first_metric_stored_at or time.time()
                self.pace.step_done(payload["step"])
            elif kind == "plan":
                self.pace.planned(payload["total_steps"])
            elif kind == "started":
                queue.record_event(
                    self.sessions,
                    self.job_id,
                    f"Stage running on Ray: {payload['world_size']} worker(s), rank 0 on "
                    f"{payload['host']} pid {payload['pid']}",
                    data={**payload, "attempt": self.attempt},
                )
            elif kind == "resumed":
                queue.record_event(
                    self.sessions,
                    self.job_id,
                    f"Attempt {self.attempt} resumes from the checkpoint at step {payload['step']}",
                    data={"resumed_from_step": payload["step"], "path": payload["path"], "attempt": self.attempt},
                )
            elif kind == "checkpoint":
                queue.record_checkpoint(
                    self.sessions, self.job_id, payload["step"], payload["path"], payload["metrics"]
                )
                forget_pruned_checkpoints(self.sessions, self.job_id, payload["path"])


class Dispatcher:
    """Claims and runs jobs one at a time; `run` loops until `stop_event` is set."""

    def __init__(
        self,
        sessions: Any,
        storage_uri: str,
        lease_seconds: float = 30.0,
        worker_id: str | None = None,
        poll_interval_s: float = 1.0,
        engine: Any = None,
        warm_worker: bool = True,
    ):
        self.sessions = sessions
        self.blobs = BlobStore(storage_uri)
        if not self.blobs.is_local:
            raise ValueError(f"storage '{storage_uri}': checkpoints need a shared filesystem path for now")
        self.storage_root = Path(self.blobs.root)
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self.poll_interval_s = poll_interval_s
        self.engine = engine
        self.warm_worker = warm_worker
        self.warm_pool: Any = None  # WarmWorkerPool once Ray is up (see warm_worker.py)

    def run(self, stop_event: threading.Event) -> None:
        log.info("dispatcher %s waiting for jobs", self.worker_id)
        self.prestart_warm_worker()
        try:
            self._loop(stop_event)
        finally:
            if self.warm_pool is not None:
                try:
                    self.warm_pool.retire()
                except Exception:  # noqa: BLE001 - Ray may be going down first (Ctrl-C); the actor goes with it
                    log.debug("could not retire the warm worker", exc_info=True)

    def prestart_warm_worker(self) -> None:
        """Start the warm worker now (Ray must be connected), so the first job finds it imported; idempotent."""
        if self.warm_worker and self.warm_pool is None:
            from services.workers.launcher import forwarded_env
            from services.workers.warm_worker import WarmWorkerPool

            self.warm_pool = WarmWorkerPool(forwarded_env())
            self.warm_pool.prestart()

    def _loop(self, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            try:
                worked = self.run_one()
            except Exception:  # noqa: BLE001 - e.g. the database restarting; the leases keep jobs safe
                log.exception("dispatcher %s: claiming or recording failed; retrying", self.worker_id)
                worked = False
            if not worked:
                if self.engine is not None and self.engine.dialect.name == "postgresql":
                    queue.wait_for_jobs(self.engine, self.poll_interval_s)
                else:
                    stop_event.wait(self.poll_interval_s)

    def run_one(self) -> bool:
        """Requeue expired leases, claim one job and run it; False when nothing was runnable."""
        queue.requeue_expired_leases(self.sessions)
        claimed = queue.claim_next_job(self.sessions, self.worker_id, self.lease_seconds)
        if claimed is None:
            return False
        try:
            self.execute(claimed)
        except LeaseLost:
            log.warning("job %s attempt %s: lease lost; another attempt owns it", claimed.id, claimed.attempt)
        return True

    def execute(self, job: queue.ClaimedJob) -> None:
        """Run one claimed attempt to its end and record the outcome (fenced by attempt)."""
        from services.workers.job_channel import JobChannel
        from services.workers.launcher import run_attempt
        from services.workers.reward_serving import delete_reward_model, deploy_reward_model

        started = time.monotonic()
        claimed_at = time.time()
        try:
            spec = resolve_spec(
                job.spec,
                job.input_files,
                job.input_models,
                self.blobs.uri,
                lambda name: queue.resolve_model(self.sessions, name),
            )
        except (InputNotReady, ValueError) as error:
            queue.fail_job(
                self.sessions,
                job.id,
                self.worker_id,
                error_object("invalid_input", str(error)),
                retryable=False,
                attempt=job.attempt,
            )
            return
        channel = JobChannel.remote(job.id, job.attempt)
        channel.mark.remote("claimed", claimed_at)
        heartbeat = Heartbeat(self.sessions, job.id, self.worker_id, job.attempt, self.lease_seconds, channel).start()
        serving = reward_model_to_serve(spec)
        application = None
        try:
            if serving:
                application = deploy_reward_model(job.id, spec.method.reward.model, spec.method.reward)
                queue.record_event(
                    self.sessions,
                    job.id,
                    f"Reward model served as Ray Serve application '{application}'",
                    data={"application": application},
                )
            outcome = run_attempt(
                spec,
                job.id,
                job.attempt,
                self.storage_root,
                channel,
                application,
                demo_eval=is_demo_job(job.metadata),
                warm_pool=self.warm_pool,
            )
            channel.mark.remote("run_returned", time.time())
        except Exception as error:  # noqa: BLE001 - e.g. Serve could not start the reward model
            from services.workers.launcher import AttemptOutcome, describe_error

            described = describe_error(error)
            outcome = AttemptOutcome(
                "failed", error_message=described["message"], error_type=described["type"], retryable=False
            )
        finally:
            if serving:
                delete_reward_model(job.id)
            heartbeat.stop()
        if heartbeat.lost:
            log.warning("job %s attempt %s was fenced; not recording its outcome", job.id, job.attempt)
            return
        self._record_timeline(job.id, channel, heartbeat.first_metric_stored_at)
        self._record_outcome(job, spec, outcome, time.monotonic() - started)

    def _record_timeline(self, job_id: str, channel: Any, first_metric_stored_at: float | None) -> None:
        """One event saying where the attempt's start-up and finish time went (seconds after the claim)."""
        import ray

        try:
            marks = ray.get(channel.timeline.remote(), timeout=10)
        except ray.exceptions.RayError:
            return
        if first_metric_stored_at is not None:
            marks["first_metric_stored"] = first_metric_stored_at
        claimed = marks.pop("claimed", None)
        if claimed is None:
            return
        offsets = {name: round(at - claimed, 3) for name, at in sorted(marks.items(), key=lambda item: item[1])}
        described = ", ".join(f"{name.replace('_', ' ')} {value:.1f}" for name, value in offsets.items())
        queue.record_event(
            self.sessions,
            job_id,
            f"Timeline, seconds after the claim: {described}",
            data={"timeline": offsets, "claimed_at": claimed},
        )

    def _record_outcome(self, job: queue.ClaimedJob, spec: Any, outcome: Any, wall_s: float) -> None:
        if outcome.status == "completed":
            result = {
                **outcome.result,
                "wall_time_s": round(wall_s, 3),
                "attempt": job.attempt,
                "input_model": spec.model.name_or_path,
            }
            kind = "reward_model" if spec.method.type == "reward_model" else "policy"
            queue.complete_job(
                self.sessions,
                job.id,
                self.worker_id,
                result=result,
                attempt=job.attempt,
                trained_tokens=int(outcome.result.get("trained_tokens") or 0),
                model_path=outcome.result.get("model_dir"),
                model_kind=kind,
                package_versions=package_versions(),
            )
        elif outcome.status == "cancelled":
            queue.mark_cancelled(self.sessions, job.id, self.worker_id)
        elif outcome.status == "paused":
            queue.mark_paused(self.sessions, job.id, self.worker_id)
        else:
            code = "worker_lost" if outcome.retryable else "stage_failed"
            error = error_object(code, outcome.error_message or "the stage failed")
            status = queue.fail_job(
                self.sessions, job.id, self.worker_id, error, retryable=outcome.retryable, attempt=job.attempt
            )
            log.warning("job %s attempt %s failed (%s): %s", job.id, job.attempt, status, outcome.error_message)


def package_versions() -> dict[str, str]:
    """What the job ran with, recorded on the job (specs are immutable; versions are not)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("alignd", "torch", "transformers", "trl", "peft", "ray", "deepspeed"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found

"""kill -9 of the Ray worker process running a stage (SQLite, the session's in-process dispatcher): the attempt
fails as retryable, the queue retries it after its backoff on a fresh worker, the retry resumes from the newest
checkpoint, and the job ends with the step count and metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from workers_support import pid_alive, sft_body, started_events, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_STEPS = 300
SAVE_STEPS = 100  # a 99-step window after each checkpoint: wider than the store's 0.5 s drain even on an idle machine


def losses(rows: list[dict]) -> dict[int, float]:
    return {row["step"]: row["metrics"]["loss"] for row in rows if "loss" in row["metrics"]}


def checkpoint_steps(storage: Path, job_id: str, attempt: int) -> list[int]:
    folder = storage / "jobs" / job_id / f"attempt-{attempt}" / "checkpoints"
    return sorted(int(path.name.split("-")[1]) for path in folder.glob("checkpoint-*") if (path / "complete").exists())


def kill_past_a_checkpoint(client, storage: Path, job_id: str, save_steps: int, pid: int) -> bool:
    """kill -9 `pid` once attempt 1 has a complete checkpoint at >= `save_steps` and has stored a later step, so
    attempt 2 has steps to run again. The store lags the stage by up to a drain interval, so the newest checkpoint is
    read again from disk right before the kill: a newer one completed meanwhile means waiting for the next window."""
    saved = checkpoint_steps(storage, job_id, 1)
    if not saved or saved[-1] < save_steps or not client.metrics(job_id, after_step=saved[-1]):
        return False
    if checkpoint_steps(storage, job_id, 1)[-1] != saved[-1]:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def kill_stage_worker_mid_run(
    client, storage: Path, body: dict, runner: str, max_steps: int = MAX_STEPS, save_steps: int = SAVE_STEPS
) -> tuple[dict, dict[int, float]]:
    """Submit `body`, kill -9 the process running its stage (rank 0) after a checkpoint, check the retry resumed;
    the finished job and its stored loss per step."""
    job_id = client.create_job(body)["id"]
    attempt_one = wait_for(lambda: started_events(client, job_id), 240, "attempt 1 to start")[0]
    assert attempt_one["runner"] == runner and attempt_one["attempt"] == 1
    wait_for(
        lambda: kill_past_a_checkpoint(client, storage, job_id, save_steps, attempt_one["pid"]),
        240,
        f"attempt 1 to store a step after its newest checkpoint (at step >= {save_steps})",
        poll_s=0.05,
    )

    # The dispatcher records the attempt as a retryable failure; by then it has stored all attempt 1 reported.
    retry = wait_for(
        lambda: [e for e in client.events(job_id) if e["message"].startswith("Attempt 1 failed")],
        60,
        "attempt 1 to be recorded as failed and retried",
    )[0]
    assert retry["level"] == "warn" and retry["data"]["retry_in_s"] > 0, retry
    assert "worker process running the stage died" in retry["message"], retry["message"]
    assert client.job(job_id)["status"] in {"queued", "running"}
    assert not (storage / "jobs" / job_id / "attempt-1" / "output" / "model").exists(), "the kill must land mid-run"
    before_retry = losses(client.metrics(job_id))

    final = client.wait(job_id, timeout_s=240)
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 2 and final["result"]["attempt"] == 2
    assert final["result"]["steps"] == max_steps

    attempt_two = next(data for data in started_events(client, job_id) if data["attempt"] == 2)
    assert attempt_two["runner"] == runner and attempt_two["pid"] != attempt_one["pid"]
    assert not pid_alive(attempt_one["pid"])

    # Attempt 2 started from attempt 1's newest checkpoint: it says so, and saved nothing at or before it.
    first_steps, second_steps = checkpoint_steps(storage, job_id, 1), checkpoint_steps(storage, job_id, 2)
    newest = max(first_steps)
    resumed = [e["data"] for e in client.events(job_id) if (e.get("data") or {}).get("resumed_from_step")]
    assert [(data["resumed_from_step"], data["attempt"]) for data in resumed] == [(newest, 2)], resumed
    assert second_steps and min(second_steps) > newest >= save_steps

    # Attempt 1 got past its newest checkpoint before it died, so attempt 2 ran those steps again; the stored rows
    # (attempt 2's, merged over attempt 1's) are the same numbers: the resumed run retraces the first one.
    redone = [step for step in before_retry if step > newest]
    assert redone, "attempt 1 reported no step after its newest checkpoint; the kill came too early to compare"
    after = losses(client.metrics(job_id))
    for step in redone:
        assert after[step] == pytest.approx(before_retry[step], rel=1e-5), f"step {step}"
    return final, after


@dataclass
class WarmRuns:
    straight: dict
    straight_losses: dict[int, float]
    killed: dict
    killed_losses: dict[int, float]


@pytest.fixture(scope="module")
def warm_runs(sqlite_stack, uploaded, tiny_model_dir) -> WarmRuns:
    """The same SFT job run straight, then with its warm worker killed mid-stage (asserts the retry on the way)."""
    client = sqlite_stack.client()
    body = sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=MAX_STEPS, save_steps=SAVE_STEPS)
    straight = client.wait(client.create_job(body)["id"], timeout_s=240)
    assert straight["status"] == "succeeded", straight["error"]
    straight_losses = losses(client.metrics(straight["id"]))
    killed, killed_losses = kill_stage_worker_mid_run(client, Path(sqlite_stack.storage_dir), body, "warm_worker")
    return WarmRuns(straight, straight_losses, killed, killed_losses)


def test_kill_9_of_the_warm_worker_mid_stage_gives_the_uninterrupted_result(warm_runs):
    assert sorted(warm_runs.killed_losses) == list(range(1, MAX_STEPS + 1))
    for step, loss in warm_runs.straight_losses.items():
        assert warm_runs.killed_losses[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    straight, killed = warm_runs.straight["result"], warm_runs.killed["result"]
    assert killed["steps"] == straight["steps"] == MAX_STEPS
    # num_tokens included: each checkpoint carries the trainer's token count, so the retry continues it.
    assert killed["metrics"] == pytest.approx(straight["metrics"], rel=1e-5)
    assert warm_runs.killed["trained_tokens"] == warm_runs.straight["trained_tokens"]
    assert killed["eval_metrics"] == pytest.approx(straight["eval_metrics"], rel=1e-5)


TRAIN_MAX_STEPS = 60
TRAIN_SAVE_STEPS = 25  # wide windows after each checkpoint, as above


def test_kill_9_of_a_ray_train_worker_mid_stage_retries_and_resumes(sqlite_stack, uploaded, tiny_model_dir):
    """Two Ray Train workers (gloo); rank 0 is killed, so rank 1 fails in its next collective ('Connection reset by
    peer'): still a retryable attempt, and the retry resumes and retraces the first attempt's steps."""
    import ray

    client = sqlite_stack.client()
    body = sft_body(
        str(tiny_model_dir), uploaded["sft"], max_steps=TRAIN_MAX_STEPS, save_steps=TRAIN_SAVE_STEPS, batch_size=4
    )
    body.update({"num_workers": 2, "cpus_per_worker": 1})
    final, killed_losses = kill_stage_worker_mid_run(
        client, Path(sqlite_stack.storage_dir), body, "ray_train", TRAIN_MAX_STEPS, TRAIN_SAVE_STEPS
    )
    assert sorted(killed_losses) == list(range(1, TRAIN_MAX_STEPS + 1))
    assert final["result"]["steps"] == TRAIN_MAX_STEPS
    # Both attempts' worker groups are gone: every CPU of the session's cluster is free again.
    wait_for(
        lambda: ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"],
        30,
        "the worker groups' CPUs to be released",
    )

"""Cancel, pause / resume and a failing stage, through the REST API, on SQLite with a real Ray dispatcher."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from workers_support import sft_body, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LONG = 100_000  # steps a job would take to finish: it only ends by cancel / pause
PAUSED_RUN = 300  # long enough that the pause lands mid-run (~40 ms a step when the machine is quiet)


def _checkpoint_steps(client, job_id: str) -> list[int]:
    return sorted(row["step_number"] for row in client.checkpoints(job_id))


def _running_past(client, job_id: str, step: int) -> bool:
    rows = client.metrics(job_id)
    return bool(rows) and rows[-1]["step"] >= step


def test_cancel_mid_run_stops_within_10s_and_keeps_the_checkpoint(sqlite_stack, uploaded, tiny_model_dir):
    client = sqlite_stack.client()
    job = client.create_job(sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=LONG, save_steps=5))
    wait_for(
        lambda: _running_past(client, job["id"], 6) and _checkpoint_steps(client, job["id"]),
        240,
        "a few steps and a checkpoint",
    )

    asked = time.monotonic()
    client.action(job["id"], "cancel")
    final = client.wait(job["id"], timeout_s=60, poll_s=0.2)
    stopped_after = time.monotonic() - asked

    assert final["status"] == "cancelled"
    assert stopped_after < 10, f"cancel took {stopped_after:.1f} s"
    steps = _checkpoint_steps(client, job["id"])
    assert steps, "the last checkpoint is kept"
    # ... and is still on disk, complete, for a later look or a new job to start from.
    kept = Path(sqlite_stack.storage_dir) / "jobs" / job["id"] / "attempt-1" / "checkpoints" / f"checkpoint-{steps[-1]}"
    assert (kept / "complete").exists()
    messages = [event["message"] for event in client.events(job["id"])]
    assert any("cancel" in message.lower() for message in messages)


def test_pause_then_resume_continues_from_the_checkpoint(sqlite_stack, uploaded, tiny_model_dir):
    client = sqlite_stack.client()
    job = client.create_job(sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=PAUSED_RUN, save_steps=1000))
    wait_for(lambda: _running_past(client, job["id"], 2), 240, "a few training steps")

    client.action(job["id"], "pause")
    paused = client.wait(job["id"], statuses={"paused", "succeeded", "failed"}, timeout_s=60)
    assert paused["status"] == "paused", paused["error"]
    paused_at = _checkpoint_steps(client, job["id"])
    assert paused_at, "pause saves a checkpoint"
    assert paused_at[-1] < PAUSED_RUN

    client.action(job["id"], "resume")
    done = client.wait(job["id"], timeout_s=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["steps"] == PAUSED_RUN and done["result"]["attempt"] == 2
    # The second attempt started from the pause checkpoint: it never saved a step at or before it.
    storage = Path(sqlite_stack.storage_dir) / "jobs" / job["id"]
    second = [int(path.name.split("-")[1]) for path in (storage / "attempt-2" / "checkpoints").glob("checkpoint-*")]
    assert second and min(second) > paused_at[-1]


def test_failing_stage_ends_failed_with_a_useful_message_and_frees_resources(sqlite_stack, uploaded, tmp_path):
    import ray

    client = sqlite_stack.client()
    # A model folder that exists but holds no model: found only when the stage loads it on the worker.
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": -3}')
    job = client.create_job(sft_body(str(broken), uploaded["sft"], max_steps=5, save_steps=5))
    final = client.wait(job["id"], timeout_s=240)

    assert final["status"] == "failed"
    message = final["error"]["message"]
    assert "Error" in message and len(message) > 20, message
    assert final["attempts"] == 1, "an input error is not retried"
    # Resources are back: every CPU of the session's cluster is free again.
    wait_for(
        lambda: ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"],
        30,
        "the failed stage's CPUs to be released",
    )

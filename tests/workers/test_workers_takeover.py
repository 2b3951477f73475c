"""kill -9 of a dispatcher mid-stage (Postgres): a second dispatcher takes over, resumes; stale attempts are fenced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from workers_support import ADMIN_KEY, pid_alive, sft_body, start_stack, started_events, wait_for

from services.store import queue
from services.store.lifecycle import LeaseLost

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

LEASE_SECONDS = 4
MAX_STEPS = 120  # far more than the steps attempt 1 can add between its checkpoint at >= 10 and the kill


def start_dispatcher(name: str, stack, ray_address: str, home: Path) -> subprocess.Popen:
    """`alignd worker` in its own process, joined to the session's Ray cluster."""
    env = {
        **os.environ,
        "ALIGND_DATABASE_URL": stack.database_url,
        "ALIGND_STORAGE_URI": str(stack.storage_dir),
        "ALIGND_HOME": str(home),
        "ALIGND_ADMIN_KEY": ADMIN_KEY,
        "ALIGND_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "worker",
            "--ray-address",
            ray_address,
            "--lease-seconds",
            str(LEASE_SECONDS),
            "--worker-id",
            name,
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_dispatcher_mid_stage_second_takes_over(
    postgres_url, ray_address, tmp_path, demo_data, tiny_model_dir, alignd_home
):
    stack = start_stack(postgres_url, tmp_path / "storage")
    client = stack.client()
    first = start_dispatcher("dispatcher-a", stack, ray_address, alignd_home)
    second = None
    try:
        training_file = client.upload(demo_data["sft"])
        job = client.create_job(sft_body(str(tiny_model_dir), training_file, max_steps=MAX_STEPS, save_steps=10))
        job_id = job["id"]
        wait_for(
            lambda: any(row["step_number"] >= 10 for row in client.checkpoints(job_id)),
            300,
            "attempt 1 to save a checkpoint at step >= 10",
        )
        attempt_one = started_events(client, job_id)[0]

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = start_dispatcher("dispatcher-b", stack, ray_address, alignd_home)

        attempt_two = wait_for(
            lambda: [data for data in started_events(client, job_id) if data["attempt"] == 2],
            120,
            "attempt 2 to start on the second dispatcher",
        )[0]
        # Ray ended the killed dispatcher's train worker before the second attempt ran: never two at once.
        assert not pid_alive(attempt_one["pid"]), "attempt 1's train worker outlived its dispatcher"
        assert attempt_two["pid"] != attempt_one["pid"]

        final = client.wait(job_id, timeout_s=300)
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] == 2 and final["result"]["attempt"] == 2
        assert final["result"]["steps"] == MAX_STEPS
        assert client.metrics(job_id)[-1]["step"] == MAX_STEPS

        # Attempt 2 resumed: its first checkpoint comes after attempt 1's newest one.
        root = stack.storage_dir / "jobs" / job_id
        first_steps = [int(p.name.split("-")[1]) for p in (root / "attempt-1" / "checkpoints").glob("checkpoint-*")]
        second_steps = [int(p.name.split("-")[1]) for p in (root / "attempt-2" / "checkpoints").glob("checkpoint-*")]
        assert second_steps and min(second_steps) > max(first_steps) >= 10

        # The store fences the stale attempt: its heartbeat, completion and failure are all refused.
        with pytest.raises(LeaseLost):
            queue.renew_lease(stack.sessions, job_id, "dispatcher-a", attempt=1, lease_seconds=LEASE_SECONDS)
        with pytest.raises(LeaseLost):
            queue.complete_job(stack.sessions, job_id, "dispatcher-a", attempt=1, result={"steps": 1})
        with pytest.raises(LeaseLost):
            queue.fail_job(stack.sessions, job_id, "dispatcher-a", "stale", attempt=1)
        assert client.job(job_id)["status"] == "succeeded"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        stack.close()

"""`alignd up` as a user runs it: kill -9 of the whole instance mid-job, a restart that finishes the job, Ctrl-C.

Each `alignd up` runs in its own session (like a terminal's foreground job), so its local Ray (GCS, raylet,
workers) shares the process group: kill -9 of the group is a crash of everything, SIGINT to the group is
what Ctrl-C sends. Only this instance's processes are signalled or inspected, never other Ray clusters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from workers_support import free_port, session_processes, sft_body, wait_for

from services.cli.rest_client import AligndClient

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ADMIN_KEY = "sk-alignd-up-restart-test"
MAX_STEPS = 400  # the kill lands right after the first checkpoint (at 5), far from the end
REPO = Path(__file__).resolve().parents[2]


def start_up(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ALIGND_HOME": str(home), "ALIGND_ADMIN_KEY": ADMIN_KEY, "ALIGND_LOG_LEVEL": "WARNING"}
    env.pop("ALIGND_DATABASE_URL", None)
    env.pop("ALIGND_STORAGE_URI", None)
    env.pop("ALIGND_RAY_ADDRESS", None)
    with log.open("ab") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "up", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(
        lambda: (
            process.poll() is not None
            or log.read_text(errors="replace").count("Ctrl-C stops it") >= 1
            and _answers(port)
        ),
        180,
        "alignd up to serve its API",
    )
    assert process.poll() is None, log.read_text(errors="replace")[-3000:]
    return process


def _answers(port: int) -> bool:
    import httpx

    try:
        return (
            httpx.get(
                f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5
            ).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def attempt_one_unfinished(home: Path, job_id: str) -> bool:
    """Attempt 1 wrote no final model (read from storage: the API died with the instance)."""
    return not (home / "storage" / "jobs" / job_id / "attempt-1" / "output" / "model").exists()


def test_up_restarts_after_kill_9_and_stops_cleanly_on_ctrl_c(tmp_path, demo_data, tiny_model_dir):
    home, port, log = tmp_path / "home", free_port(), tmp_path / "up.log"
    first = start_up(home, port, log)
    second = None
    try:
        client = AligndClient(f"http://127.0.0.1:{port}", ADMIN_KEY)
        training_file = client.upload(demo_data["sft"])
        job_id = client.create_job(sft_body(str(tiny_model_dir), training_file, max_steps=MAX_STEPS, save_steps=5))[
            "id"
        ]
        # Read from storage, not the API (which lags by a drain interval): the kill must land soon after the first
        # checkpoint, long before the last step, even on an idle machine where a step takes milliseconds.
        checkpoints = home / "storage" / "jobs" / job_id / "attempt-1" / "checkpoints"
        wait_for(lambda: list(checkpoints.glob("checkpoint-*/complete")), 240, "a first checkpoint before the crash",
                 poll_s=0.02)

        os.killpg(first.pid, signal.SIGKILL)  # the whole instance: API, dispatcher, Ray, the train worker
        first.wait(timeout=30)
        assert attempt_one_unfinished(home, job_id), "the crash must land mid-run for this test to mean anything"
        wait_for(lambda: not session_processes(first.pid), 30, "the killed instance's processes to be gone")

        second = start_up(home, port, log)
        final = client.wait(job_id, timeout_s=240)
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] == 2 and final["result"]["attempt"] == 2
        assert final["result"]["steps"] == MAX_STEPS
        assert client.metrics(job_id)[-1]["step"] == MAX_STEPS
        # Attempt 2 resumed from attempt 1's newest checkpoint instead of starting over.
        root = home / "storage" / "jobs" / job_id
        before = [int(p.name.split("-")[1]) for p in (root / "attempt-1" / "checkpoints").glob("checkpoint-*")]
        after = [int(p.name.split("-")[1]) for p in (root / "attempt-2" / "checkpoints").glob("checkpoint-*")]
        assert after and min(after) > max(before) >= 5

        # Ctrl-C: the terminal sends SIGINT to the whole foreground group.
        members = session_processes(second.pid)
        assert len(members) > 2, "the instance runs its own Ray processes"
        os.killpg(second.pid, signal.SIGINT)
        assert second.wait(timeout=90) == 0, log.read_text(errors="replace")[-3000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [
            p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]:
            time.sleep(0.5)
        leftover = [f"{p.pid} {p.name()}" for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not leftover, f"processes of the stopped instance still run: {leftover}"
        assert "stopped" in log.read_text(errors="replace")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

"""Production mode on one machine: `ray start --head`, `alignd serve`, `alignd worker` as separate processes, Postgres.

The head uses Ray's token auth with a token every process gets through RAY_AUTH_TOKEN (never the shared
~/.ray/auth_token), a port other than 6379 (Redis holds it here) and its own --temp-dir. `ray start
--block` runs in its own session, so stopping it stops exactly this head, never another cluster on
the machine (no bare `ray stop`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers_support import free_port, session_processes, sft_body, wait_for

from services.cli.rest_client import AligndClient

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_KEY = "sk-alignd-production-test"


def stop_sessions(processes: list[subprocess.Popen], timeout_s: float = 30) -> None:
    """SIGTERM the process groups we started (all at once), then SIGKILL whatever of their sessions is left."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
        for leftover in session_processes(process.pid):
            leftover.kill()
        if process.poll() is None:
            process.wait(timeout=10)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A `ray start --head` cluster of 2 CPUs on 127.0.0.1; its address and the env its clients need."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard=false",
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
        ],
        env=env,
        stdout=(tmp_path / "ray-head.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        # `ray start --block` took > 30 s to leave after SIGTERM (every time): its session is killed after 5 s.
        stop_sessions([head], timeout_s=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_separate_api_and_dispatcher_on_postgres_with_a_ray_head(
    ray_head, postgres_url, tmp_path, demo_data, tiny_model_dir, alignd_home
):
    address, ray_env = ray_head
    storage = tmp_path / "shared-storage"
    port = free_port()
    env = {
        **ray_env,
        "ALIGND_DATABASE_URL": postgres_url,
        "ALIGND_STORAGE_URI": str(storage),
        "ALIGND_ADMIN_KEY": ADMIN_KEY,
        "ALIGND_HOME": str(alignd_home),
        "ALIGND_LOG_LEVEL": "WARNING",
        "ALIGND_RAY_ADDRESS": address,
    }
    subprocess.run([str(BIN / "alignd"), "migrate"], env=env, cwd=REPO, check=True, capture_output=True)
    processes = []
    try:
        for name, command in (
            ("api", ["serve", "--port", str(port), "--log-level", "warning"]),
            ("worker", ["worker", "--worker-id", "prod-dispatcher"]),
        ):
            processes.append(
                subprocess.Popen(
                    [str(BIN / "alignd"), *command],
                    env=env,
                    cwd=REPO,
                    start_new_session=True,
                    stdout=(tmp_path / f"{name}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        client = AligndClient(f"http://127.0.0.1:{port}", ADMIN_KEY)
        wait_for(lambda: _answers(client), 120, "the API process to answer")
        training_file = client.upload(demo_data["sft"])
        job = client.create_job(sft_body(str(tiny_model_dir), training_file, max_steps=4, save_steps=2))

        final = client.wait(job["id"], timeout_s=240)

        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-2000:] for name in ("api", "worker")}
        assert final["status"] == "succeeded", (final["error"], logs)
        assert final["result"]["steps"] == 4
        started = [event["data"] for event in client.events(job["id"]) if (event.get("data") or {}).get("pid")]
        # The stage ran in a Ray worker process of the head, not in the dispatcher or the API.
        assert started and started[0]["pid"] not in {process.pid for process in processes}
        assert Path(final["result"]["model_dir"]).is_relative_to(storage)
        assert all(process.poll() is None for process in processes), logs
    finally:
        stop_sessions(processes)


def _answers(client: AligndClient) -> bool:
    import httpx

    try:
        client.list_jobs()
    except httpx.TransportError:  # not listening yet
        return False
    return True

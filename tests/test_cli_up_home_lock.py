"""A second embedded alignd on a home another one runs under (`alignd up` on another port, or `alignd demo`
without --url) is refused with the running one's pid and URL: it would requeue that instance's running jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.workers.home_lock import HomeInUse, HomeLock

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = HomeLock(tmp_path)
    first.acquire("http://127.0.0.1:8000")
    with pytest.raises(HomeInUse, match=rf"pid {os.getpid()} at http://127.0.0.1:8000\) is running under {tmp_path}"):
        HomeLock(tmp_path).acquire("http://127.0.0.1:8001")
    first.release()
    again = HomeLock(tmp_path)
    again.acquire("http://127.0.0.1:8001")  # released: the next instance may start
    again.release()


@pytest.mark.ray
@pytest.mark.slow
def test_a_second_instance_on_a_running_home_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "ALIGND_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("ALIGND_DATABASE_URL", None)
    port = free_port()
    log = (tmp_path / "up.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "services.cli.main", "up", "--port", str(port)], cwd=ROOT,
                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "alignd is up" not in (tmp_path / "up.log").read_text():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        for command in (["up", "--port", str(free_port())], ["demo"]):
            started = time.monotonic()
            second = subprocess.run([sys.executable, "-m", "services.cli.main", *command], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stdout + second.stderr
            assert f"another alignd (pid {first.pid} at http://127.0.0.1:{port}) is running under" in second.stderr
            assert "Traceback" not in second.stderr and time.monotonic() - started < 60
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()

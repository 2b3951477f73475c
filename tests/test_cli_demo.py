"""`alignd demo` end to end, as the README's first command runs it (embedded alignd, real Ray, stdout not a
terminal): every stage succeeds, the API key prints whole on one line, and no library start-up notes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The demo's output (stdout + stderr) and its home. One run: it trains four stages (~2-3 minutes)."""
    home = tmp_path_factory.mktemp("demo-home")
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "ALIGND_VERBOSE")}
    # The reward model's Serve port: another alignd on this machine may hold the default one.
    env.update({"ALIGND_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "ALIGND_SERVE_HTTP_PORT": str(free_port())})
    result = subprocess.run([sys.executable, "-m", "services.cli.main", "demo"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=1200)
    output = result.stdout + result.stderr
    print(output)  # the table, for -s runs
    assert result.returncode == 0 and "every stage succeeded" in output, output
    return output, home


@pytest.mark.slow
def test_the_api_key_prints_whole_on_one_line(demo: tuple[str, Path]) -> None:
    output, home = demo
    key = (home / "admin_key").read_text().strip()
    assert re.search(rf"^alignd is up at http://127\.0\.0\.1:\d+ \(API key {re.escape(key)}\)$", output, re.M), output
    assert re.search(r"^submitted: supervised ftjob-\w+, dpo ftjob-\w+, reward_model ftjob-\w+, ppo ftjob-\w+$",
                     output, re.M), output


@pytest.mark.slow
def test_no_library_start_up_notes(demo: tuple[str, Path]) -> None:
    output, _ = demo
    for note in ("Token authentication is enabled", "Started a local Ray instance", "Started Serve",
                 "is ready at http", "Deleting app"):
        assert note not in output, output


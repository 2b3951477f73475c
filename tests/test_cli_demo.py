"""`alignd demo` end to end, as the README's first command runs it (embedded alignd, real Ray, stdout not a
terminal): every stage succeeds, the API key prints whole on one line, no library start-up notes, and the
table does not pass noise off as PPO's effect."""

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


@pytest.mark.slow
def test_ppo_rows_show_its_objective_and_a_saturated_metric_is_said_to_be(demo: tuple[str, Path]) -> None:
    output, _ = demo
    number = r"-?\d+\.\d{3}"
    # What PPO maximises, from the stage's own held-out evaluation of the SFT and the trained policy.
    assert re.search(rf"RM score \(PPO's goal\)\s*│\s*{number}\s*│\s*{number}", output), output
    solved = re.search(rf"supervised\s*│\s*succeeded\s*│\s*rule satisfaction\s*│\s*{number}\s*│\s*(\d\.\d+)", output)
    assert solved, output
    note = re.sub(r"\s+", " ", output[output.find("note: "):])
    if float(solved.group(1)) >= 0.9:
        count = round(float(solved.group(1)) * 100)
        assert f"note: SFT already solves {count} of 100 held-out problems" in note, output
    else:
        assert "note: " not in output

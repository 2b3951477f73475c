"""Every command of the README's command-line table exists with every option the table shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def table_commands() -> dict[tuple[str, ...], set[str]]:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Command line"):]
    block = block[block.index("```text") + 7:block.index("```", block.index("```text") + 7)]
    commands: dict[tuple[str, ...], set[str]] = {}
    current: tuple[str, ...] | None = None
    for line in block.splitlines():
        usage = re.split(r"\s{2,}", line.strip())[0]  # the usage column; two spaces start the description
        if usage.startswith("alignd "):
            words = [word for word in usage.split()[1:] if re.fullmatch(r"[a-z][a-z-]*", word)]
            current = tuple(words)
            commands[current] = set()
        elif not usage.startswith(("[", "--")):
            continue  # a description line
        if current is not None:
            commands[current] |= set(re.findall(r"--[a-z][a-z-]*", usage))
    return commands


COMMANDS = table_commands()


def test_the_table_lists_every_command() -> None:
    assert ("train",) in COMMANDS and ("keys", "revoke") in COMMANDS and len(COMMANDS) >= 12
    assert COMMANDS[("train",)] >= {"--output-dir", "--max-steps", "--no-resume"}


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_each_command_takes_the_options_shown(command: tuple[str, ...]) -> None:
    result = subprocess.run([sys.executable, "-m", "services.cli.main", *command, "--help"], capture_output=True,
                            text=True, cwd=ROOT, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    missing = [option for option in COMMANDS[command] if option not in result.stdout]
    assert not missing, f"alignd {' '.join(command)} --help lacks {missing}"


def test_bare_alignd_commands_come_after_the_readme_says_how_to_get_alignd_on_path() -> None:
    # The install puts alignd in .venv/bin only: a reader copying 'alignd train ...' got 'command not found'.
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|text)\n(.*?)```", readme, flags=re.S)
    first_bare = min(readme.index(line) for block in blocks for line in block.splitlines()
                     if line.startswith("alignd "))
    assert "source .venv/bin/activate" in readme[:first_bare]


def test_the_readme_qlora_spec_is_a_valid_spec_that_plans() -> None:
    # The only LoRA / QLoRA spec a reader sees: it must match the schema alignd train and the API use.
    import yaml

    from alignment_core.planning import estimate_memory
    from alignment_core.specs import load_spec

    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    spec = load_spec(yaml.safe_load(block))
    assert spec.model.lora is not None and spec.model.quantization is not None
    assert spec.distribution.gpus_per_worker == 1 and spec.data.train_files == ["my_chats.jsonl"]
    estimate = estimate_memory(spec, "H100-80GB")  # offline: the planner knows Qwen2.5-0.5B's shape
    assert estimate.method == "qlora" and estimate.fits


def test_the_first_steps_lead_from_the_demo_to_its_jobs_in_the_dashboard() -> None:
    # alignd demo stops the instance it started: the jobs it printed were nowhere to be seen afterwards.
    readme = (ROOT / "README.md").read_text()
    first_step = readme[readme.index("1. Install and run the embedded demo"):readme.index("2. Install the test tools")]
    assert ".venv/bin/alignd demo" in first_step and ".venv/bin/alignd up --port 8000" in first_step
    assert "http://127.0.0.1:8000/" in first_step

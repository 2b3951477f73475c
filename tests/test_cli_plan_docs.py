"""docs/planning.md documents every option of `alignd plan` (the --model / shape options came without a word there),
and its examples run offline, each naming where the model's shape came from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "planning.md").read_text()


def alignd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_every_plan_option_is_documented_and_every_documented_one_exists() -> None:
    shown = set(re.findall(r"--[a-z][a-z-]*", alignd("plan", "--help").stdout)) - {"--help"}
    documented = set(re.findall(r"--[a-z][a-z-]*", DOC))
    assert shown - documented == set(), "undocumented in docs/planning.md"
    assert documented - shown == set(), "documented but not an option of alignd plan"


def test_the_documented_examples_run_offline() -> None:
    examples = [line.split("#")[0].split()[2:] for line in DOC.splitlines() if line.startswith("alignd plan --model")]
    assert len(examples) >= 4
    for args in examples:
        result = alignd("plan", *args)
        assert "model shape:" in result.stdout and "Traceback" not in result.stderr, (args, result.stderr)
        assert "recommended" in result.stdout, args

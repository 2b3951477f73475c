"""The commands docs/development.md gives a developer exist, with the options it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVELOPMENT = (ROOT / "docs" / "development.md").read_text()
MODULE_COMMANDS = sorted(set(re.findall(r"`python -m ([\w.]+)((?: --?[\w-]+(?: [\w-]+)?)*)`", DEVELOPMENT)))


def test_the_gpu_section_gives_runnable_commands() -> None:
    # It pointed at ../shared/gpu.md, a file outside the repository, for how to run anything on a GPU.
    section = DEVELOPMENT[DEVELOPMENT.index("## GPU runs"):]
    assert "python -m bench.gpu.run" in section and "pytest -m gpu" in section
    assert ("bench.gpu.run", " --tiny --device cpu") in MODULE_COMMANDS


@pytest.mark.parametrize(("module", "options"), MODULE_COMMANDS)
def test_each_python_module_command_takes_the_options_shown(module: str, options: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    missing = [flag for flag in re.findall(r"--[\w-]+", options) if flag not in result.stdout]
    assert not missing, f"python -m {module} --help lacks {missing}"

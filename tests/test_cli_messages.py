"""What `alignd` prints around a command, as a user reads it: usage lines name the argument as the README writes
it, and a spec's YAML error names the file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def alignd(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGND_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_usage_names_the_spec_as_the_readme_writes_it(tmp_path: Path) -> None:
    missing = alignd("train", home=tmp_path / "home")
    assert missing.returncode == 2
    assert "train [OPTIONS] {SPEC.yaml}" in missing.stderr and "spec_path" not in missing.stderr
    assert "Missing argument 'SPEC.yaml'" in missing.stderr
    planned = alignd("plan", "--help", home=tmp_path / "home")
    assert "plan [OPTIONS] [SPEC.yaml]" in planned.stdout and "spec_path" not in planned.stdout


def test_a_yaml_error_names_the_file_and_shows_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("method: [supervised\nmodel: {name_or_path: alignd-tiny}\n")
    for command in (["train", str(spec), "-o", str(tmp_path / "out")], ["plan", str(spec)]):
        result = alignd(*command, home=tmp_path / "home")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f'in "{spec}", line 1, column 9' in result.stderr, result.stderr
        assert "<unicode string>" not in result.stderr
        assert "method: [supervised" in result.stderr  # the offending line, with the caret under it

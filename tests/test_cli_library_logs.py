"""`alignd train` prints alignd's lines, not the libraries' start-up notes: no bitsandbytes kernels message, no
DeepSpeed 'Setting accelerator', no transformers load report for a reward model's new score head (with raw colour
codes in a log file), no deprecation warnings meant for library authors; `--verbose` / ALIGND_VERBOSE=1 brings
them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIR = {"prompt": "Sort the letters: c b a", "chosen": "a b c", "rejected": "c b a"}
NOISE = ("gemm_4bit_forward", "Setting accelerator", "LOAD REPORT", "FutureWarning", "DeprecationWarning", "\x1b[")


def train(method: str, tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> str:
    """stdout + stderr of a 2-step `alignd [options] train` of `method` on the tiny model (not a terminal)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text((json.dumps(PAIR) + "\n") * 8)
    spec = tmp_path / f"{method}.yaml"
    spec.write_text(f"method: {method}\nmodel: {{name_or_path: alignd-tiny}}\n"
                    f"data: {{train_files: [{pairs}], max_length: 32}}\ntraining: {{max_steps: 2, batch_size: 4}}\n")
    full_env = {name: value for name, value in os.environ.items() if name != "ALIGND_VERBOSE"}
    full_env.update({"ALIGND_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})})
    result = subprocess.run([sys.executable, "-m", "services.cli.main", *options, "train", str(spec), "-o",
                             str(tmp_path / f"out-{method}"), "--no-resume"],
                            capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_train_output_is_alignds_own_unless_verbose(tmp_path: Path) -> None:
    for method in ("reward_model", "dpo"):
        output = train(method, tmp_path)
        assert "completed after 2 steps" in output
        assert not [word for word in NOISE if word in output], output
    # The same runs with the libraries' logs back: the notes were real, and the switch works both ways.
    assert "LlamaForSequenceClassification LOAD REPORT" in train("reward_model", tmp_path, "--verbose")
    assert "FutureWarning: `is_gradient_checkpointing` is deprecated" in train(
        "dpo", tmp_path, env={"ALIGND_VERBOSE": "1"})

"""An attempt that resumes from a checkpoint taken at the last step trains no further step."""

from __future__ import annotations

import json
from pathlib import Path

from alignment_core.context import LocalContext
from alignment_core.specs import JobSpec
from alignment_core.stages import run_stage


def three_step_spec(tiny_model_dir: Path, demo_data: dict) -> JobSpec:
    """Three SFT steps with a checkpoint after each."""
    return JobSpec.model_validate({
        "method": "supervised",
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train_files": [str(demo_data["sft"])], "max_examples": 16, "max_length": 64,
                 "max_prompt_length": 32},
        "training": {"max_steps": 3, "batch_size": 4, "save_steps": 1},
    })


def test_resuming_a_finished_run_keeps_the_step_count(tiny_model_dir: Path, demo_data: dict, tmp_path: Path) -> None:
    spec = three_step_spec(tiny_model_dir, demo_data)
    first = run_stage(spec, LocalContext(tmp_path))
    # A crash after the last checkpoint but before the outcome was recorded: the next attempt resumes.
    again = run_stage(spec, LocalContext(tmp_path))
    assert first.steps == again.steps == 3
    assert again.status == "completed" and again.model_dir is not None
    # The metrics file holds each logged step once, even though the second attempt reported them again.
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keyed = [(row["step"], tuple(sorted(row))) for row in rows]
    assert len(keyed) == len(set(keyed)) and max(row["step"] for row in rows) == 3


def test_a_crashed_attempts_unreported_metrics_are_backfilled(tiny_model_dir: Path, demo_data: dict,
                                                              tmp_path: Path) -> None:
    """Metrics logged before the last checkpoint but lost with a crashed runner come back on resume."""
    spec = three_step_spec(tiny_model_dir, demo_data)
    run_stage(spec, LocalContext(tmp_path))
    (tmp_path / "metrics.jsonl").unlink()  # the runner crashed before storing any metrics
    run_stage(spec, LocalContext(tmp_path))
    steps = {json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert steps == {1, 2, 3}


def test_a_larger_max_steps_extends_a_finished_run(tiny_model_dir: Path, demo_data: dict, tmp_path: Path) -> None:
    """Raising max_steps on a finished run's folder trains the extra steps from its last checkpoint."""
    spec = three_step_spec(tiny_model_dir, demo_data)
    run_stage(spec, LocalContext(tmp_path))
    longer = spec.model_copy(update={"training": spec.training.model_copy(update={"max_steps": 5})})
    extended = run_stage(longer, LocalContext(tmp_path))
    assert extended.status == "completed" and extended.steps == 5
    steps = {json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert {4, 5} <= steps
    assert (tmp_path / "checkpoints" / "checkpoint-5").is_dir()

"""A diverging run fails with a message the user can act on instead of writing NaN weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment_core.context import LocalContext
from alignment_core.specs import JobSpec
from alignment_core.stages import run_stage
from alignment_core.stages.trainer_bridge import NonFiniteLoss


def _model_with_a_nan_weight(source: Path, target: Path) -> Path:
    """A checkpoint corrupted the way an fp16 overflow leaves it: one NaN weight poisons every loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def test_nan_loss_fails_the_stage(tiny_model_dir: Path, demo_data: dict, tmp_path: Path) -> None:
    broken = _model_with_a_nan_weight(tiny_model_dir, tmp_path / "broken-model")
    spec = JobSpec.model_validate({
        "method": "supervised",
        "model": {"name_or_path": str(broken)},
        "data": {"train_files": [str(demo_data["sft"])], "max_examples": 32, "max_length": 64,
                 "max_prompt_length": 32},
        "training": {"max_steps": 3, "batch_size": 4},
    })
    with pytest.raises(NonFiniteLoss, match="learning_rate"):
        run_stage(spec, LocalContext(tmp_path / "run"))

"""The PPO example specs validate and name what the README's pipeline produces."""

from __future__ import annotations

from pathlib import Path

import yaml

from alignment_core.specs import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_ppo_examples_validate() -> None:
    with_model = load_spec(yaml.safe_load((EXAMPLES / "ppo.yaml").read_text()))
    assert with_model.method.reward.type == "model"
    assert with_model.method.reward.model == "runs/reward_model/model"
    assert with_model.model.name_or_path == "runs/sft/model"
    checker = load_spec(yaml.safe_load((EXAMPLES / "ppo_checker.yaml").read_text()))
    assert checker.method.reward.type == "function" and checker.method.reward.function == "demo_sort"

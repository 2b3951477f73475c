"""Learning proof on the demo task: the real SFT, reward-model and DPO stages (TRL, LocalContext) on the
built-in tiny model's shape, judged on held-out problems that never appear in the training files.

One SFT run is shared by the three tests (module fixture); the reward model and DPO start from it, as in
examples/. Thresholds sit below the measured values (in the comments) with a margin. One torch thread:
these matmuls are too small to gain from a second thread, and a CPU shared with other work loses a lot
to spinning OpenMP threads; it also makes the numbers reproducible on one machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment_core.context import LocalContext
from alignment_core.modeling.tiny import DEMO_HIDDEN_SIZE, DEMO_LAYERS, make_tiny_model
from alignment_core.specs import ModelSpec, load_spec
from alignment_core.stages import StageResult, run_stage

pytestmark = pytest.mark.slow

SEQUENCE_LIMITS = {"max_length": 64, "max_prompt_length": 32}
SFT_TRAINING = {"max_steps": 96, "batch_size": 16, "learning_rate": 2e-3, "warmup_ratio": 0.05,
                "lr_scheduler": "cosine", "logging_steps": 8, "seed": 0}
REWARD_TRAINING = {"max_steps": 240, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.05,
                   "logging_steps": 10, "seed": 0}
# DPO on the SFT model's own mistakes (sampled, failed by the checker) with RPO's likelihood term on the chosen
# answers: see test_dpo_raises_win_rate_and_rule_satisfaction for what the alternatives measured.
DPO_METHOD = {"type": "dpo", "beta": 0.1, "sft_weight": 1.0}
DPO_TRAINING = {"max_steps": 160, "batch_size": 16, "learning_rate": 5e-4, "logging_steps": 20, "seed": 0}


@dataclass(frozen=True)
class SftRun:
    base_dir: Path
    model_dir: Path
    base_rule_satisfaction: float
    rule_satisfaction: float


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def held_out(demo_data: dict[str, Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in demo_data["eval"].read_text().splitlines()]


def train(method: dict[str, Any], model_dir: Path, train_file: Path, output_dir: Path,
          training: dict[str, Any]) -> StageResult:
    spec = load_spec({"method": method, "model": {"name_or_path": str(model_dir)},
                      "data": {"train_files": [str(train_file)], **SEQUENCE_LIMITS}, "training": training})
    result = run_stage(spec, LocalContext(output_dir, resume=False))
    assert result.status == "completed" and result.steps == training["max_steps"]
    return result


def held_out_rule_satisfaction(model_dir: Path, held_out: list[dict[str, Any]]) -> float:
    from alignment_core.evaluation.demo_task import rule_satisfaction
    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(ModelSpec(name_or_path=str(model_dir)), "cpu", trainable=False)
    return rule_satisfaction(model, load_tokenizer(str(model_dir)), [row["prompt"] for row in held_out])


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory, demo_data: dict[str, Path],
            held_out: list[dict[str, Any]]) -> SftRun:
    root = tmp_path_factory.mktemp("learning")
    base = make_tiny_model(root / "base", hidden_size=DEMO_HIDDEN_SIZE, num_layers=DEMO_LAYERS)
    result = train({"type": "supervised"}, base, demo_data["sft"], root / "sft", SFT_TRAINING)
    return SftRun(base, result.model_dir, held_out_rule_satisfaction(base, held_out),
                  held_out_rule_satisfaction(result.model_dir, held_out))


def test_sft_raises_held_out_rule_satisfaction(sft_run: SftRun) -> None:
    # Measured: base 0.00 -> 0.51 after 96 steps (200 held-out problems).
    assert sft_run.base_rule_satisfaction <= 0.02
    assert sft_run.rule_satisfaction >= 0.35


def test_reward_model_ranks_held_out_pairs(sft_run: SftRun, demo_data: dict[str, Path],
                                          held_out: list[dict[str, Any]], tmp_path: Path) -> None:
    from alignment_core.evaluation.reward import pairwise_accuracy
    from alignment_core.modeling.loading import load_sequence_scorer, load_tokenizer

    result = train({"type": "reward_model"}, sft_run.model_dir, demo_data["preference"], tmp_path / "rm",
                   REWARD_TRAINING)
    scorer = load_sequence_scorer(ModelSpec(name_or_path=str(result.model_dir)), "cpu", trainable=False)
    accuracy = pairwise_accuracy(scorer, load_tokenizer(str(result.model_dir)), held_out)
    # Measured: 0.975 on 200 held-out pairs; substituted letters are the hard kind (0.78 of 23). 160 steps gave
    # 0.885 (a repeated letter ranked above the answer), 320 steps 0.955. Before substituted letters and merged
    # repeats were among the rejected answers, 160 steps gave 0.985.
    assert accuracy >= 0.9


def test_dpo_raises_win_rate_and_rule_satisfaction(sft_run: SftRun, demo_data: dict[str, Path],
                                                   held_out: list[dict[str, Any]], tmp_path: Path) -> None:
    from alignment_core.demo.on_policy import write_on_policy_preferences
    from alignment_core.evaluation.preference import preference_win_rate
    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer

    on_policy = tmp_path / "on_policy.jsonl"
    assert write_on_policy_preferences(sft_run.model_dir, demo_data["prompts"], on_policy, seed=0) >= 1000
    result = train(DPO_METHOD, sft_run.model_dir, on_policy, tmp_path / "dpo", DPO_TRAINING)
    policy = load_causal_lm(ModelSpec(name_or_path=str(result.model_dir)), "cpu", trainable=False)
    reference = load_causal_lm(ModelSpec(name_or_path=str(sft_run.model_dir)), "cpu", trainable=False)
    tokenizer = load_tokenizer(str(sft_run.model_dir))
    # Held-out pairs with written rejected answers, not the on-policy kind DPO trained on.
    win_rate = preference_win_rate(policy, reference, tokenizer, held_out)
    rule_satisfaction = held_out_rule_satisfaction(result.model_dir, held_out)
    # Measured (SFT seeds 0 / 1 / 2, 200 held-out problems): rule satisfaction 0.51 -> 0.775, 0.44 -> 0.77,
    # 0.48 -> 0.74; win-rate 0.955, 0.92, 0.94. The likelihood term carries much of it: 160 more SFT steps at
    # the same lr reach 0.715, 0.705, 0.785. Without it DPO lowers the chosen answers too and rule satisfaction
    # does not rise: written pairs, lr 5e-5..5e-4, 40..80 steps, 0.41..0.545 (win-rate 0.75..0.88); on-policy
    # pairs 0.0..0.51 (the policy stops stopping). Written pairs with the term, 160 steps: 0.71. From an SFT model
    # trained 384 steps (0.905): 0.95 with the term, 0.68 without, 0.96 continuing SFT.
    assert win_rate >= 0.85
    assert rule_satisfaction >= sft_run.rule_satisfaction + 0.15

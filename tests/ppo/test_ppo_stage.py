"""The PPO stage on the demo task: learning with the checker and with a trained reward model, exact resume,
LoRA with the adapter-disabled base as reference, and reward sources that fail."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment_core.context import LocalContext
from alignment_core.rewards import RewardSourceError
from alignment_core.specs import load_spec
from alignment_core.stages import run_stage

HELD_OUT = 200


def ppo_spec(policy: Path, prompts: Path, reward: dict[str, Any], **overrides: Any) -> Any:
    method = {
        "type": "ppo",
        "reward": reward,
        "max_new_tokens": 16,
        "rollout_batch_size": 32,
        "mini_batch_size": 16,
        "ppo_epochs": 2,
        "kl_coef": 0.05,
        **overrides.pop("method", {}),
    }
    training = {
        "learning_rate": 3e-4,
        "max_steps": 24,
        "batch_size": 16,
        "seed": 0,
        "lr_scheduler": "constant",
        **overrides.pop("training", {}),
    }
    model = {"name_or_path": str(policy), **overrides.pop("model", {})}
    data = {"train_files": [str(prompts)], "max_length": 64, "max_prompt_length": 48, **overrides.pop("data", {})}
    return load_spec({"method": method, "model": model, "training": training, "data": data})


def held_out_prompts(demo_data: dict[str, Path]) -> list[str]:
    return [json.loads(line)["prompt"] for line in demo_data["eval"].read_text().splitlines()][:HELD_OUT]


def rule_satisfaction_of(model_dir: Path, prompts: list[str]) -> float:
    from alignment_core.evaluation.demo_task import rule_satisfaction
    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer
    from alignment_core.specs import ModelSpec

    model = load_causal_lm(ModelSpec(name_or_path=str(model_dir)), "cpu", trainable=False)
    return rule_satisfaction(model, load_tokenizer(str(model_dir)), prompts)


STEP_METRICS = (
    "reward_mean",
    "reward_std",
    "kl",
    "entropy",
    "clip_fraction",
    "value_loss",
    "approx_kl",
    "response_length",
    "policy_loss",
    "kl_coef",
    "score_mean",
)
# One recipe for both reward sources (examples/ppo*.yaml: half the step, kl 0.5 and 32 prompts an update for their
# wider model). Sampling a little colder than the policy keeps rollouts near the greedy answers the checker judges;
# unit-variance rewards make one KL coefficient mean the same for the checker's [0, 1] and the reward model's
# logits; a gentle step and a firm KL keep a learned judge's verdicts valid where the policy goes. 64 prompts an
# update made the gains robust: with 32 (same 96 updates) the trained reward model's ran +0.005 to +0.045 over nine
# runs and the checker's +0.045 to +0.10; a larger step instead (lr 2e-4 / 3e-4, kl 0.1 to 0.3) let the policy game
# the reward model (-0.035 to +0.075). The previous recipe (lr 3e-4, kl 0.05 on raw rewards, temperature 1) lost
# rule satisfaction even with the checker: -0.08 / +0.01 / -0.045 over 48 updates from a 0.53 SFT start (seeds
# 0 / 1 / 2), -0.035 over 192 updates at temperature 0.7 from this one.
LEARNING_METHOD = {
    "temperature": 0.7,
    "rollout_batch_size": 64,
    "mini_batch_size": 16,
    "ppo_epochs": 2,
    "normalize_rewards": True,
    "kl_coef": 0.3,
}
LEARNING_TRAINING = {"learning_rate": 1e-4, "max_steps": 96}


def assert_learned(history: list[dict], before: float, after: float, min_gain: float) -> None:
    """Rollout reward rose, held-out rule satisfaction rose by `min_gain`, KL to the SFT policy stayed bounded,
    and every update logged what a user watches."""
    history = [row for row in history if "reward_mean" in row]  # the update rows, not the final evaluation
    rewards = [row["reward_mean"] for row in history]
    early, late = sum(rewards[:8]) / 8, sum(rewards[-16:]) / 16
    kls = [row["kl"] for row in history]
    print(
        f"reward early {early:.3f} late {late:.3f}; rule satisfaction {before:.3f} -> {after:.3f}; "
        f"max kl {max(kls):.3f}"
    )
    assert late > early, (early, late)
    assert after >= before + min_gain, (before, after)
    assert max(kls) < 3.0  # nats per response, against the SFT policy
    for row in history:
        assert set(STEP_METRICS) <= set(row), set(STEP_METRICS) - set(row)


@pytest.mark.slow
def test_ppo_with_checker_reward_improves_the_sft_policy(
    sft_model_dir: Path, demo_data: dict[str, Path], tmp_path: Path
) -> None:
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        {"type": "function", "function": "demo_sort"},
        method=LEARNING_METHOD,
        training=LEARNING_TRAINING,
    )
    context = LocalContext(tmp_path)
    result = run_stage(spec, context)
    assert result.status == "completed" and result.steps == LEARNING_TRAINING["max_steps"]
    assert (tmp_path / "model" / "config.json").exists()
    prompts = held_out_prompts(demo_data)
    # Measured (200 held-out prompts, SFT start 0.62, PPO seeds 0 / 1 / 2): 0.735 / 0.715 / 0.73, max KL <= 0.55.
    assert_learned(
        context.history,
        rule_satisfaction_of(sft_model_dir, prompts),
        rule_satisfaction_of(result.model_dir, prompts),
        min_gain=0.07,
    )


@pytest.mark.slow
def test_ppo_with_trained_reward_model_improves_the_sft_policy(
    sft_model_dir: Path, reward_model_dir: Path, demo_data: dict[str, Path], tmp_path: Path
) -> None:
    # The demo preference data rejects degenerate output (one letter repeated, endless answers) beside
    # near-misses, so the reward model must rank a right answer above what an RL policy drifts into.
    from alignment_core.rewards.local_model import LocalModelRewardClient

    judge = LocalModelRewardClient.from_path(str(reward_model_dir), "cpu")
    prompt = "Sort the letters: c a b d"
    answers = ["a b c d", "a a a a a a a a a a a a a a", "a b c d a b c d a b c d", "c"]
    right, *degenerate = judge.score([prompt] * len(answers), answers)
    assert right > max(degenerate), (right, degenerate)

    # Written near-misses alone left the reward model blind to the policy's own commonest sampled slip: sorted
    # answers of the right length with a letter miscounted ("a b g h h h" for "a a b g h h"), ranked below the right
    # answer 48 times in 100. With the SFT model's sampled mistakes among its comparisons (conftest), 88 in 100;
    # every length mistake, the bulk of the policy's greedy errors, 100 in 100.
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        {"type": "model", "model": str(reward_model_dir)},
        method=LEARNING_METHOD,
        training=LEARNING_TRAINING,
        data={"eval_files": [str(demo_data["eval"])]},
    )
    context = LocalContext(tmp_path)
    result = run_stage(spec, context)
    assert result.status == "completed" and result.steps == LEARNING_TRAINING["max_steps"]
    # The stage's own held-out evaluation: greedy answers of the trained and of the starting policy, same judge.
    evaluation = result.eval_metrics
    print(f"held-out RM reward {evaluation['eval_reference_reward_mean']:.3f} -> {evaluation['eval_reward_mean']:.3f}")
    assert evaluation["eval_reward_mean"] > evaluation["eval_reference_reward_mean"]
    # Judge the policy by the checker too: the reward model's own score could be hacked.
    prompts = held_out_prompts(demo_data)
    # Measured (200 held-out prompts, SFT start 0.62, gains): PPO seeds 0-4 +0.09 / +0.07 / +0.075 / +0.08 / +0.105,
    # max KL <= 0.66; with SFT and reward model trained at seed 1 (also 0.62) +0.045 / +0.055 / +0.045. A 600-step
    # reward model: +0.075 / +0.105 / +0.075 / +0.115 / +0.13 (PPO seeds 0-4) but +0.03 / +0.025 / +0.06 at seed 1 (144
    # updates instead: +0.045 / +0.035); one on the written pairs alone +0.05 / +0.105 / +0.10; with 32 prompts an
    # update, +0.005 to +0.045 over nine runs. The bar, eight problems of 200 more solved, is under every run of
    # this recipe on both SFT / reward-model seeds.
    assert_learned(
        context.history,
        rule_satisfaction_of(sft_model_dir, prompts),
        rule_satisfaction_of(result.model_dir, prompts),
        min_gain=0.04,
    )


def test_resume_matches_an_uninterrupted_run(sft_model_dir: Path, demo_data: dict[str, Path], tmp_path: Path) -> None:
    """4 updates straight vs 2, pause, resume, 2 more: same samples, rewards, losses and weights."""
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        {"type": "function", "function": "demo_sort"},
        method={
            "rollout_batch_size": 8,
            "mini_batch_size": 4,
            "max_new_tokens": 10,
            "adaptive_kl": True,
            "normalize_rewards": True,
            "target_kl": 0.1,
            "kl_horizon": 100,
        },
        training={"max_steps": 4, "batch_size": 2, "lr_scheduler": "linear", "save_steps": 3},
    )
    straight = LocalContext(tmp_path / "straight")
    run_stage(spec, straight)
    paused = LocalContext(tmp_path / "split", stop_after_step=2)
    first = run_stage(spec, paused)
    assert first.status == "paused" and first.steps == 2 and first.model_dir is None
    assert (tmp_path / "split" / "checkpoints" / "checkpoint-2" / "complete").exists()
    resumed = LocalContext(tmp_path / "split")
    second = run_stage(spec, resumed)
    assert second.status == "completed" and second.steps == 4

    split_history = paused.history + resumed.history
    assert [row["step"] for row in split_history] == [1, 2, 3, 4]
    for key in (
        "reward_mean",
        "policy_loss",
        "value_loss",
        "kl",
        "kl_coef",
        "score_mean",
        "response_length",
        "approx_kl",
        "entropy",
    ):
        expected = torch.tensor([row[key] for row in straight.history], dtype=torch.float64)
        actual = torch.tensor([row[key] for row in split_history], dtype=torch.float64)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7, msg=f"{key} differs after resume")
    assert straight.history[-1]["kl_coef"] != spec.method.kl_coef  # the adaptive controller moved and was restored
    from safetensors.torch import load_file

    straight_weights = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed_weights = load_file(tmp_path / "split" / "model" / "model.safetensors")
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-7)


def test_cancel_keeps_a_checkpoint(sft_model_dir: Path, demo_data: dict[str, Path], tmp_path: Path) -> None:
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        {"type": "function", "function": "demo_sort"},
        method={"rollout_batch_size": 4, "mini_batch_size": 4, "max_new_tokens": 6},
        training={"max_steps": 5},
    )
    context = LocalContext(tmp_path, stop_after_step=1, stop_reason="cancel")
    result = run_stage(spec, context)
    assert result.status == "cancelled" and result.steps == 1
    assert context.total_steps == 5  # told to the runner up front (job progress and its finish estimate)
    assert (tmp_path / "checkpoints" / "checkpoint-1" / "complete").exists()


def test_lora_policy_uses_its_adapter_free_base_as_reference(
    sft_model_dir: Path, demo_data: dict[str, Path], tmp_path: Path
) -> None:
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        {"type": "function", "function": "demo_sort"},
        method={
            "rollout_batch_size": 8,
            "mini_batch_size": 8,
            "max_new_tokens": 8,
            "value_model": "head",
            "ppo_epochs": 1,
            "kl_estimator": "k3",
        },
        training={"max_steps": 3, "learning_rate": 1e-2, "batch_size": 8},
        model={"lora": {"r": 4, "dropout": 0.0}},
    )
    context = LocalContext(tmp_path)
    result = run_stage(spec, context)
    # LoRA's B starts at zero, so the first rollout's policy is exactly the reference: KL 0.
    assert context.history[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert context.history[-1]["kl"] > 0.0
    assert (result.model_dir / "adapter_config.json").exists()


@pytest.fixture
def failing_rewards() -> Any:
    module = types.ModuleType("ppo_failing_rewards")

    def broken(prompts: list[str], completions: list[str]) -> list[float]:
        raise ConnectionError("scoring service refused")

    def hangs(prompts: list[str], completions: list[str]) -> list[float]:
        time.sleep(60)
        return [0.0] * len(prompts)

    module.broken, module.hangs = broken, hangs
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        ({"type": "function", "function": "ppo_failing_rewards:broken"}, "raised ConnectionError: scoring service"),
        ({"type": "function", "function": "ppo_failing_rewards:hangs", "timeout_s": 1.0}, "no answer within 1 s"),
        ({"type": "http", "url": "http://127.0.0.1:{port}/score", "timeout_s": 2.0}, "ConnectError"),
    ],
    ids=["raises", "times-out", "http-down"],
)
def test_failing_reward_source_ends_the_stage_with_a_clear_error(
    failing_rewards: Any,
    sft_model_dir: Path,
    demo_data: dict[str, Path],
    tmp_path: Path,
    reward: dict[str, Any],
    message: str,
) -> None:
    if "url" in reward:
        reward = {**reward, "url": reward["url"].format(port=_closed_port())}
    spec = ppo_spec(
        sft_model_dir,
        demo_data["prompts"],
        reward,
        method={"rollout_batch_size": 4, "mini_batch_size": 4, "max_new_tokens": 4},
        training={"max_steps": 2},
    )
    started = time.monotonic()
    with pytest.raises(RewardSourceError, match="reward source") as caught:
        run_stage(spec, LocalContext(tmp_path))
    assert message in str(caught.value)
    assert time.monotonic() - started < 30

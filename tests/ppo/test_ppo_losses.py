"""PPO's tensor pieces against small cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignment_core.losses.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    generalized_advantages,
    kl_per_token,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    token_logprobs,
)
from alignment_core.ppo.kl import AdaptiveKlController, FixedKlController
from alignment_core.ppo.rollout import truncate_at_stop
from alignment_core.ppo.scoring import RunningMoments, shape_scores
from alignment_core.specs import PpoMethod, RewardSource


def test_masked_mean_and_var_ignore_padding() -> None:
    values = torch.tensor([[1.0, 3.0, 100.0], [5.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    # deviations -2, 0, 2 -> sum of squares 8, unbiased / 2
    assert masked_var(values, mask).item() == pytest.approx(4.0)
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([2.0, 5.0])


def test_whitening_gives_zero_mean_unit_variance_on_real_tokens() -> None:
    values = torch.tensor([[1.0, 3.0, 7.0], [5.0, -4.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    whitened = masked_whiten(values, mask)
    assert whitened.tolist()[0][:2] == pytest.approx([-1.0, 0.0], abs=1e-6)  # (x - 3) / 2
    assert whitened[1, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert whitened[0, 2].item() == 0.0 and whitened[1, 1].item() == 0.0
    kept_mean = masked_whiten(values, mask, shift_mean=False)
    assert kept_mean[0, 0].item() == pytest.approx(2.0, abs=1e-6)  # -1 + mean 3


def test_kl_estimators_k1_and_k3() -> None:
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.4)])
    k1 = kl_per_token(logp, ref, "k1")
    assert k1.tolist() == pytest.approx([math.log(2.0), math.log(0.5)])
    k3 = kl_per_token(logp, ref, "k3")
    # r = q / p: 0.5 and 2.0; k3 = r - 1 - log r
    assert k3.tolist() == pytest.approx([0.5 - 1 - math.log(0.5), 2.0 - 1 - math.log(2.0)])
    assert (k3 >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_per_token(logp, ref, "k2")  # type: ignore[arg-type]


def test_per_token_rewards_put_score_on_last_real_token() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = per_token_rewards(torch.tensor([1.0, -2.0]), kl, mask, kl_coef=0.5)
    expected = [[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 - 2.0, 0.0]]
    assert rewards.tolist()[0] == pytest.approx(expected[0])
    assert rewards.tolist()[1] == pytest.approx(expected[1])


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.6, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.5
    advantages, returns = generalized_advantages(rewards, values, mask, gamma, lam)
    # row 0: deltas d2 = 1 - 0.3 = 0.7; d1 = 0 + 0.9*0.3 - 0.2 = 0.07; d0 = 0 + 0.9*0.2 - 0.1 = 0.08
    a2 = 0.7
    a1 = 0.07 + gamma * lam * a2
    a0 = 0.08 + gamma * lam * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2])
    # row 1 ends after two tokens: the padded value 9.0 must not leak in. d1 = 2 - 0.6; d0 = 0.5 + 0.9*0.6 - 0.4
    b1 = 2.0 - 0.6
    b0 = 0.5 + 0.9 * 0.6 - 0.4 + gamma * lam * b1
    assert advantages[1].tolist() == pytest.approx([b0, b1, 0.0])
    assert returns[1].tolist() == pytest.approx([b0 + 0.4, b1 + 0.6, 0.0])


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.1, -0.2, 1.0]])
    values = torch.tensor([[0.3, 0.5, 0.7]])
    advantages, returns = generalized_advantages(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert returns[0].tolist() == pytest.approx([0.9, 0.8, 1.0])
    assert advantages[0].tolist() == pytest.approx([0.6, 0.3, 0.3])


def test_clipped_policy_loss_hand_case() -> None:
    old = torch.zeros(1, 3)
    logprobs = torch.log(torch.tensor([[1.5, 0.7, 1.1]]))  # ratios 1.5, 0.7, 1.1
    advantages = torch.tensor([[1.0, -2.0, 3.0]])
    out = clipped_policy_loss(logprobs, old, advantages, torch.ones(1, 3), clip_range=0.2)
    # token 0: A>0, ratio clipped to 1.2 -> -1.2 ; token 1: A<0, ratio clipped to 0.8 -> 1.6 ; token 2: -3.3
    assert out.loss.item() == pytest.approx((-1.2 + 1.6 - 3.3) / 3, rel=1e-6)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.5, 0.7, 1.1)) / 3
    assert out.approx_kl.item() == pytest.approx(expected_kl, rel=1e-6)


def test_policy_loss_gradient_vanishes_once_clipped() -> None:
    logprobs = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_(True)
    out = clipped_policy_loss(logprobs, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), 0.2)
    out.loss.backward()
    assert logprobs.grad[0, 0].item() == 0.0  # clipped: no push further
    assert logprobs.grad[0, 1].item() == pytest.approx(-1.1 / 2)  # d(-ratio)/dlogp / n tokens


def test_clipped_value_loss_hand_case() -> None:
    values = torch.tensor([[1.0, 0.0]])
    old_values = torch.tensor([[0.5, 0.1]])
    returns = torch.tensor([[2.0, 0.0]])
    out = clipped_value_loss(values, old_values, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped v = 0.7 -> (0.7-2)^2 = 1.69 -> max 1.69
    # token 1: unclipped 0, clipped v = 0 (within range) -> 0
    assert out.loss.item() == pytest.approx(0.5 * (1.69 + 0.0) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)


def test_entropy_and_token_logprobs() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-12, 1e-12]]]))
    entropy = entropy_from_logits(logits)
    assert entropy[0, 0].item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert entropy[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    logprobs = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert logprobs.tolist()[0] == pytest.approx([math.log(0.25), 0.0], abs=1e-6)


def test_kl_controllers_and_state() -> None:
    fixed = FixedKlController(0.1)
    fixed.update(100.0, 16)
    assert fixed.value == 0.1
    adaptive = AdaptiveKlController(0.1, target=2.0, horizon=100)
    adaptive.update(10.0, 10)  # error clipped to +0.2 -> x (1 + 0.2 * 10 / 100)
    assert adaptive.value == pytest.approx(0.1 * 1.02)
    adaptive.update(1.0, 10)  # error -0.5 clipped to -0.2
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.98)
    restored = AdaptiveKlController(1.0, 1.0, 1)
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value and restored.target == 2.0 and restored.horizon == 100


def test_truncate_at_first_stop_token() -> None:
    generated = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9]])
    ids, mask, has_eos = truncate_at_stop(generated, stop_ids=[2], pad_id=0)
    assert ids.tolist() == [[5, 6, 2, 0, 0], [5, 6, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert has_eos.tolist() == [True, False]


def test_score_shaping_penalties_normalisation_and_clipping() -> None:
    method = PpoMethod(
        reward=RewardSource(type="function", function="demo_sort"),
        missing_eos_penalty=1.0,
        length_penalty=0.1,
        reward_clip=1.5,
        normalize_rewards=False,
    )
    raw = torch.tensor([1.0, 1.0, 3.0])
    shaped = shape_scores(raw, torch.tensor([True, False, True]), torch.tensor([2.0, 2.0, 1.0]), method, None)
    assert shaped.tolist() == pytest.approx([0.8, -0.2, 1.5])  # 3 - 0.1 = 2.9 clipped to 1.5
    method.normalize_rewards = True
    method.reward_clip = None
    method.missing_eos_penalty = None
    method.length_penalty = 0.0
    moments = RunningMoments()
    first = shape_scores(torch.tensor([1.0, 3.0]), torch.tensor([True, True]), torch.ones(2), method, moments)
    assert first.tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    moments.update(torch.tensor([5.0, 7.0]))
    everything = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert moments.mean == pytest.approx(everything.mean().item())
    assert moments.std == pytest.approx(everything.std(unbiased=False).item())
    copy = RunningMoments()
    copy.load_state_dict(moments.state_dict())
    assert (copy.mean, copy.var, copy.count) == (moments.mean, moments.var, moments.count)

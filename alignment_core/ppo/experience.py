"""From a scored rollout to PPO's experience: old log-probs, reference KL, values, rewards, GAE."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from alignment_core.losses.ppo import (
    generalized_advantages,
    kl_per_token,
    masked_mean,
    masked_whiten,
    per_token_rewards,
)
from alignment_core.ppo.forward import SequenceBatch, policy_pass
from alignment_core.ppo.rollout import Rollout
from alignment_core.ppo.update import Experience, PpoModels
from alignment_core.specs import PpoMethod


@dataclass
class ExperienceStats:
    kl: float  # mean over samples of the summed per-token KL to the reference
    non_score_reward: float  # mean summed KL penalty
    value_mean: float
    advantage_mean: float  # before whitening
    return_mean: float


def sequence_batch(rollout: Rollout) -> SequenceBatch:
    input_ids, attention_mask, position_ids = rollout.sequence_inputs()
    return SequenceBatch(
        input_ids,
        attention_mask,
        position_ids,
        rollout.query_ids.shape[1],
        rollout.response_ids,
        rollout.response_mask,
    )


def reference_scope(policy: Any, reference: Any | None, disable_adapters: Callable) -> tuple[Any, Any]:
    """The model that gives reference log-probs and the context to run it in.

    A PEFT policy has no separate reference: its base with adapters switched off is the frozen SFT policy.
    """
    if reference is not None:
        return reference, contextlib.nullcontext()
    return policy, disable_adapters(policy)


@torch.no_grad()
def make_experience(
    rollout: Rollout,
    scores: torch.Tensor,
    models: PpoModels,
    reference: Any | None,
    disable_adapters: Callable,
    method: PpoMethod,
    kl_coef: float,
    micro_batch_size: int,
) -> tuple[Experience, ExperienceStats]:
    """Run the policy, reference and value passes in micro-batches, then shape rewards and compute GAE."""
    batch = sequence_batch(rollout)
    mask = batch.response_mask
    uses_head = models.value_head is not None
    logprobs, ref_logprobs, values = [], [], []
    for start in range(0, batch.input_ids.shape[0], micro_batch_size):
        micro = batch.rows(torch.arange(start, min(start + micro_batch_size, batch.input_ids.shape[0])))
        current = policy_pass(models.policy, micro, method.temperature, with_hidden=uses_head)
        logprobs.append(current.logprobs)
        values.append(models.values(micro, current.last_hidden))
        reference_model, scope = reference_scope(models.policy, reference, disable_adapters)
        with scope:
            ref_logprobs.append(policy_pass(reference_model, micro, method.temperature).logprobs)
    logprobs, ref_logprobs, values = torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)
    values = values * mask
    kl = kl_per_token(logprobs, ref_logprobs, method.kl_estimator) * mask
    rewards = per_token_rewards(scores.to(logprobs.device), kl, mask, kl_coef)
    advantages, returns = generalized_advantages(rewards, values, mask, method.gamma, method.lam)
    stats = ExperienceStats(
        kl=float(kl.sum(dim=1).mean()),
        non_score_reward=float((-kl_coef * kl).sum(dim=1).mean()),
        value_mean=float(masked_mean(values, mask)),
        advantage_mean=float(masked_mean(advantages, mask)),
        return_mean=float(masked_mean(returns, mask)),
    )
    if method.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return Experience(batch, logprobs, values, advantages, returns), stats

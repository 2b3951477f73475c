"""The PPO update: several epochs of shuffled minibatches over one scored rollout batch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignment_core.losses.ppo import clipped_policy_loss, clipped_value_loss, masked_mean
from alignment_core.ppo.forward import SequenceBatch, ValueHead, policy_pass, token_values
from alignment_core.specs import PpoMethod


@dataclass
class Experience:
    """One rollout batch after scoring, the reference / value passes and GAE; fixed during the epochs."""

    sequences: SequenceBatch
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return self.sequences.input_ids.shape[0]

    def rows(self, index: torch.Tensor) -> Experience:
        return Experience(
            self.sequences.rows(index),
            self.old_logprobs[index],
            self.old_values[index],
            self.advantages[index],
            self.returns[index],
        )


@dataclass
class PpoModels:
    """The trained modules and their optimizers; value_model (separate) or value_head (on the policy)."""

    policy: Any
    value_model: Any | None
    value_head: ValueHead | None
    policy_optimizer: torch.optim.Optimizer
    value_optimizer: torch.optim.Optimizer | None
    policy_scheduler: Any
    value_scheduler: Any | None

    def values(self, batch: SequenceBatch, policy_hidden: torch.Tensor | None = None) -> torch.Tensor:
        if self.value_head is not None:
            return self.value_head(policy_hidden)
        return token_values(self.value_model, batch)


def trainable_parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for module in modules if module is not None for p in module.parameters() if p.requires_grad]


def ppo_update(
    models: PpoModels,
    experience: Experience,
    method: PpoMethod,
    micro_batch_size: int,
    max_grad_norm: float,
    temperature: float,
) -> dict[str, float]:
    """`method.ppo_epochs` passes of minibatch steps; returns the mean of each metric over all minibatches.

    Each minibatch is split into micro-batches whose gradients are accumulated, so memory follows
    `training.batch_size` while the update follows `method.mini_batch_size`.
    """
    uses_head = models.value_head is not None
    policy_params = trainable_parameters(models.policy, models.value_head)
    value_params = trainable_parameters(models.value_model)
    totals: dict[str, float] = defaultdict(float)
    steps = 0
    size = len(experience)
    mini = min(method.mini_batch_size, size)
    for _ in range(method.ppo_epochs):
        order = torch.randperm(size)
        for start in range(0, size, mini):
            minibatch = order[start : start + mini]
            models.policy_optimizer.zero_grad(set_to_none=True)
            if models.value_optimizer is not None:
                models.value_optimizer.zero_grad(set_to_none=True)
            for micro_start in range(0, len(minibatch), micro_batch_size):
                micro = experience.rows(minibatch[micro_start : micro_start + micro_batch_size])
                weight = len(micro) / len(minibatch)
                metrics = _micro_step(models, micro, method, temperature, uses_head, weight)
                for key, value in metrics.items():
                    totals[key] += value * weight
            totals["policy_grad_norm"] += float(nn.utils.clip_grad_norm_(policy_params, max_grad_norm))
            models.policy_optimizer.step()
            models.policy_scheduler.step()
            if models.value_optimizer is not None:
                totals["value_grad_norm"] += float(nn.utils.clip_grad_norm_(value_params, max_grad_norm))
                models.value_optimizer.step()
                models.value_scheduler.step()
            steps += 1
    return {key: value / steps for key, value in totals.items()}


def _micro_step(
    models: PpoModels, micro: Experience, method: PpoMethod, temperature: float, uses_head: bool, weight: float
) -> dict[str, float]:
    """Forward, losses and backward on one micro-batch (gradients scaled by its share of the minibatch)."""
    mask = micro.sequences.response_mask
    needs_entropy_grad = method.entropy_coef > 0
    current = policy_pass(
        models.policy,
        micro.sequences,
        temperature,
        with_entropy=True,
        entropy_grad=needs_entropy_grad,
        with_hidden=uses_head,
    )
    values = models.values(micro.sequences, current.last_hidden)
    policy = clipped_policy_loss(current.logprobs, micro.old_logprobs, micro.advantages, mask, method.clip_range)
    value = clipped_value_loss(values, micro.old_values, micro.returns, mask, method.value_clip_range)
    entropy = masked_mean(current.entropy, mask)
    loss = policy.loss + method.value_loss_coef * value.loss - method.entropy_coef * entropy
    (loss * weight).backward()
    return {
        "policy_loss": float(policy.loss.detach()),
        "value_loss": float(value.loss.detach()),
        "entropy": float(entropy.detach()),
        "clip_fraction": float(policy.clip_fraction),
        "approx_kl": float(policy.approx_kl),
        "value_clip_fraction": float(value.clip_fraction),
        "loss": float(loss.detach()),
    }

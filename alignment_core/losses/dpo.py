"""Direct preference optimisation and its variants on per-sequence log-probabilities.

Each function takes summed log-probabilities of the chosen / rejected responses under the policy and
the reference; `beta * (log pi - log ref)` is the implicit reward.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DpoLossType = Literal["sigmoid", "ipo", "hinge"]


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(labels[t + 1] | prefix) over positions where mask[t + 1] is 1, per sequence."""
    shifted = logits[:, :-1, :].float().log_softmax(dim=-1)
    targets = labels[:, 1:].clamp(min=0)
    per_token = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask[:, 1:].to(per_token.dtype)).sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    loss_type: DpoLossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards).

    - sigmoid: -log sigmoid(beta * delta); with label_smoothing eps it is cDPO,
      -(1 - eps) log sigmoid(beta * delta) - eps log sigmoid(-beta * delta).
    - hinge: relu(1 - beta * delta).
    - ipo: (delta - 1 / (2 beta))^2, on per-token averages when lengths are given (as TRL does).
    """
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is not None and rejected_lengths is not None:
            delta = chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected 'sigmoid', 'ipo' or 'hinge'")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()

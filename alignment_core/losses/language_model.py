"""Next-token cross-entropy on the tokens that carry a label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def masked_next_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of predicting labels[t + 1] from logits[t], over labels != -100.

    `num_items` divides the summed loss instead of this batch's own count, so micro-batches of an
    accumulated step add up to the mean over the whole step.
    """
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    total = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = num_items if num_items is not None else (shifted_labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count

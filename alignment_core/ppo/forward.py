"""Forward passes over prompt + response: policy / reference log-probs and entropy, per-token values.

Position t of the response is scored by the model's output at the position before it, so every
quantity here is read from the slice ``[Lq - 1, Lq + Lr - 1)`` of the full sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignment_core.losses.ppo import entropy_from_logits, token_logprobs


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    query_length: int
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def rows(self, index: torch.Tensor) -> SequenceBatch:
        return SequenceBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.position_ids[index],
            self.query_length,
            self.response_ids[index],
            self.response_mask[index],
        )

    @property
    def response_slice(self) -> slice:
        return slice(self.query_length - 1, self.query_length - 1 + self.response_ids.shape[1])


@dataclass
class PolicyPass:
    logprobs: torch.Tensor  # (B, Lr)
    entropy: torch.Tensor | None  # (B, Lr)
    last_hidden: torch.Tensor | None  # (B, Lr, H), for a value head on the policy


def policy_pass(
    model: Any,
    batch: SequenceBatch,
    temperature: float,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    with_hidden: bool = False,
) -> PolicyPass:
    """Log-probs of the response tokens under `model`'s sampling distribution (logits / temperature).

    With ``entropy_grad=False`` the entropy is a metric only, kept out of the autograd graph.
    """
    output = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        output_hidden_states=with_hidden,
        use_cache=False,
    )
    logits = output.logits[:, batch.response_slice] / temperature
    logprobs = token_logprobs(logits, batch.response_ids)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    hidden = output.hidden_states[-1][:, batch.response_slice] if with_hidden else None
    return PolicyPass(logprobs, entropy, hidden)


class ValueHead(nn.Module):
    """A linear head on the policy's last hidden state (method.value_model = 'head')."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)  # start from V = 0: no value signal is better than noise
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def _scorer_parts(scorer: Any) -> tuple[nn.Module, nn.Module]:
    """The transformer body and the one-logit head of a sequence classifier (PEFT-wrapped or not)."""
    base = scorer.get_base_model() if hasattr(scorer, "get_base_model") else scorer
    body = getattr(base, base.base_model_prefix, None)
    head = next((getattr(base, name) for name in ("score", "classifier") if hasattr(base, name)), None)
    if body is None or head is None:
        raise TypeError(f"{type(base).__name__} has no transformer body + 'score' head to read token values from")
    return body, head


def token_values(scorer: Any, batch: SequenceBatch) -> torch.Tensor:
    """Per-token values V(prompt + response[:t]) from a sequence classifier's head applied at every position.

    A sequence classifier scores the last token only; applying its head to every hidden state gives a
    value per prefix, and lets the value model start from the reward model (InstructGPT's choice).
    """
    body, head = _scorer_parts(scorer)
    hidden = body(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state[:, batch.response_slice]
    return head(hidden).squeeze(-1).float()

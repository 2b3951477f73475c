"""Preference win-rate: how often the policy's implicit reward prefers the chosen response.

The implicit reward of a response is log pi(response | prompt) - log ref(response | prompt), so the
margin of a pair is [pi(ch) - ref(ch)] - [pi(rej) - ref(rej)]. Only responses are scored, never the
prompt. A policy judged against itself has all margins 0 and a win-rate of exactly 0.5.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from alignment_core.data.chat import Messages
from alignment_core.evaluation.logprobs import response_logprobs
from alignment_core.modeling.reference import disabled_adapters


def preference_triple(row: dict[str, Any]) -> tuple[str | Messages, str | Messages, str | Messages]:
    """(prompt, chosen, rejected) from our preference rows or OpenAI's DPO rows."""
    if "prompt" in row:
        return row["prompt"], row["chosen"], row["rejected"]
    chosen = row.get("preferred_output", row.get("preferred_completion"))
    rejected = row.get("non_preferred_output", row.get("non_preferred_completion"))
    return row["input"]["messages"], chosen, rejected


def preference_margins(
    policy: Any,
    reference: Any | None,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    normalize: bool = False,
    batch_size: int = 16,
) -> torch.Tensor:
    """Implicit-reward margin per pair; `reference` None means the policy with its adapters disabled."""
    prompts, chosen, rejected = (list(column) for column in zip(*map(preference_triple, rows)))

    def implicit_terms(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores = []
        for responses in (chosen, rejected):
            result = response_logprobs(model, tokenizer, prompts, responses, batch_size=batch_size)
            scores.append(result.mean_per_token() if normalize else result.sums)
        return scores[0], scores[1]

    policy_chosen, policy_rejected = implicit_terms(policy)
    reference_context = disabled_adapters(policy) if reference is None else contextlib.nullcontext(reference)
    with reference_context as reference_model:
        reference_chosen, reference_rejected = implicit_terms(reference_model)
    return (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)


def preference_win_rate(
    policy: Any,
    reference: Any | None,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    normalize: bool = False,
    batch_size: int = 16,
) -> float:
    """Share of pairs with a positive margin, ties counting one half; `normalize` divides by response length."""
    if not rows:
        raise ValueError("preference_win_rate needs at least one row")
    margins = preference_margins(policy, reference, tokenizer, rows, normalize=normalize, batch_size=batch_size)
    wins = (margins > 0).float() + 0.5 * (margins == 0).float()
    return float(wins.mean())

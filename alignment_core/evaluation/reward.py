"""Reward-model evaluation: score prompt + response texts, and pairwise accuracy on preference rows."""

from __future__ import annotations

from typing import Any

from alignment_core.data.chat import Messages, as_assistant_turn, as_messages
from alignment_core.evaluation.inference import batches, inference_mode, model_device, padding_side
from alignment_core.evaluation.preference import preference_triple


def score_texts(
    reward_model: Any,
    tokenizer: Any,
    prompts: list[str | Messages],
    responses: list[str | Messages],
    batch_size: int = 16,
) -> list[float]:
    """The scorer's output for each conversation (prompt + response in the chat template)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    texts = [
        tokenizer.apply_chat_template(as_messages(prompt) + as_assistant_turn(response), tokenize=False)
        for prompt, response in zip(prompts, responses)
    ]
    device = model_device(reward_model)
    scores: list[float] = []
    # The sequence classifier reads its score at the last non-pad token of each row.
    with inference_mode(reward_model), padding_side(tokenizer, "right"):
        for chunk in batches(texts, batch_size):
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            scores.extend(reward_model(**encoded).logits[:, 0].float().tolist())
    return scores


def pairwise_accuracy(reward_model: Any, tokenizer: Any, rows: list[dict[str, Any]], batch_size: int = 16) -> float:
    """Share of preference rows where score(prompt + chosen) > score(prompt + rejected)."""
    if not rows:
        raise ValueError("pairwise_accuracy needs at least one row")
    prompts, chosen, rejected = (list(column) for column in zip(*map(preference_triple, rows)))
    chosen_scores = score_texts(reward_model, tokenizer, prompts, chosen, batch_size=batch_size)
    rejected_scores = score_texts(reward_model, tokenizer, prompts, rejected, batch_size=batch_size)
    return sum(c > r for c, r in zip(chosen_scores, rejected_scores)) / len(rows)

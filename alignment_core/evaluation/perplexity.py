"""Perplexity on assistant tokens: exp of the mean negative log-likelihood of every assistant turn."""

from __future__ import annotations

import math
from typing import Any

from alignment_core.data.chat import Messages
from alignment_core.evaluation.logprobs import response_logprobs


def assistant_turns(row: dict[str, Any]) -> list[tuple[str | Messages, str]]:
    """(conversation so far, assistant answer) for each scored assistant turn of a supervised or preference row."""
    if "messages" in row:
        messages = row["messages"]
        return [
            (messages[:index], message["content"])
            for index, message in enumerate(messages)
            if message.get("role") == "assistant" and message.get("weight", 1) != 0
        ]
    if "instruction" in row:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return [(prompt, row["output"])]
    if "completion" in row:
        return [(row["prompt"], row["completion"])]
    if "chosen" in row:
        return [(row["prompt"], row["chosen"])]
    raise ValueError(f"row has no assistant text to score (fields: {sorted(row)})")


def perplexity(model: Any, tokenizer: Any, rows: list[dict[str, Any]], batch_size: int = 16) -> float:
    """exp(total NLL / total assistant tokens) over all rows."""
    pairs = [pair for row in rows for pair in assistant_turns(row)]
    if not pairs:
        raise ValueError("perplexity needs at least one assistant turn")
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    result = response_logprobs(model, tokenizer, prompts, responses, batch_size=batch_size)
    return math.exp(-float(result.sums.sum()) / int(result.counts.sum()))

"""Tokenize conversational rows with loss masks on assistant / completion tokens only.

Truncation never silently drops a whole response: the prompt (everything before the first trained
token) is cut from the left to ``max_prompt_length`` first, then the sequence is cut from the right to
``max_length``; an example whose response would be cut to nothing is dropped and counted, and
``NoUsableExamples`` is raised when every example is dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from alignment_core.data.chat import Messages, template_renders_tool_calls, tool_calls_as_text
from alignment_core.data.filters import within_length
from alignment_core.specs import DataSpec

IGNORE_INDEX = -100  # label of tokens that carry no loss (the Hugging Face convention)

logger = logging.getLogger(__name__)


class NoUsableExamples(ValueError):
    """Every example was dropped (by truncation or length filters)."""


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot mark which tokens a turn produced."""


@dataclass
class TokenizationReport:
    """What tokenization kept and dropped, by reason."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    truncated: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def render_ids(tokenizer: Any, messages: Messages, add_generation_prompt: bool = False,
               tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of messages in the tokenizer's chat template (with the tools it may call, if any)."""
    if not messages:
        return []
    encoded = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True
    )
    return list(encoded["input_ids"])


def assistant_loss_mask(tokenizer: Any, messages: Messages,
                        tools: list[dict[str, Any]] | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, mask) where mask is 1 on tokens of assistant turns whose ``weight`` is not 0.

    A turn's tokens are those its rendering adds after the generation prompt of the turns before it.
    """
    input_ids = render_ids(tokenizer, messages, tools=tools)
    mask = [0] * len(input_ids)
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        start = len(render_ids(tokenizer, messages[:index], add_generation_prompt=True, tools=tools))
        through = render_ids(tokenizer, messages[: index + 1], tools=tools)
        if input_ids[: len(through)] != through:
            raise ChatTemplateError(
                "the chat template renders a conversation differently from its prefix (turn "
                f"{index}), so assistant tokens cannot be located; use a template that renders turns append-only"
            )
        for position in range(start, len(through)):
            mask[position] = 1
    return input_ids, mask


def truncate_masked(input_ids: list[int], mask: list[int], max_length: int,
                    max_prompt_length: int) -> tuple[list[int], list[int]] | None:
    """Cut the untrained prefix from the left to max_prompt_length, then the tail to max_length.

    Returns None when no trained token would be left.
    """
    if len(input_ids) > max_length:
        first = mask.index(1) if 1 in mask else len(mask)
        if first > max_prompt_length:
            cut = first - max_prompt_length
            input_ids, mask = input_ids[cut:], mask[cut:]
        input_ids, mask = input_ids[:max_length], mask[:max_length]
    if 1 not in mask:
        return None
    return input_ids, mask


def renderable(tokenizer: Any, messages: Messages) -> Messages:
    """The messages, with tool calls written as text where the chat template would drop them."""
    if any(message.get("tool_calls") for message in messages) and not template_renders_tool_calls(tokenizer):
        return [tool_calls_as_text(message) for message in messages]
    return messages


def tokenize_sft_row(tokenizer: Any, row: dict, data: DataSpec) -> dict[str, list[int]] | str:
    """``{"input_ids", "labels"}`` for one messages row, or the reason it is dropped."""
    input_ids, mask = assistant_loss_mask(tokenizer, renderable(tokenizer, row["messages"]), row.get("tools"))
    if not within_length(len(input_ids), data.filters.min_length, data.filters.max_length):
        return "length_filter"
    if 1 not in mask:
        return "no_trained_tokens"
    truncated = truncate_masked(input_ids, mask, data.max_length, data.max_prompt_length)
    if truncated is None:
        return "response_truncated_away"
    input_ids, mask = truncated
    labels = [token if bit else IGNORE_INDEX for token, bit in zip(input_ids, mask)]
    return {"input_ids": input_ids, "labels": labels}


def completion_ids(tokenizer: Any, prompt_ids: list[int], prompt: Messages, completion: Messages) -> list[int]:
    """The tokens a completion adds after the rendered prompt (with its generation prompt)."""
    full = render_ids(tokenizer, prompt + completion)
    if full[: len(prompt_ids)] != prompt_ids:
        raise ChatTemplateError("the rendered prompt is not a prefix of prompt + response; the chat template "
                                "must render the generation prompt the way it starts an assistant turn")
    return full[len(prompt_ids):]


def tokenize_preference_row(tokenizer: Any, row: dict, data: DataSpec) -> dict[str, Any] | str:
    """``{"prompt_ids", "chosen_ids", "rejected_ids"}`` (+ margin) for one row, or the drop reason."""
    prompt = renderable(tokenizer, row["prompt"])
    prompt_ids = render_ids(tokenizer, prompt, add_generation_prompt=True)
    chosen = completion_ids(tokenizer, prompt_ids, prompt, renderable(tokenizer, row["chosen"]))
    rejected = completion_ids(tokenizer, prompt_ids, prompt, renderable(tokenizer, row["rejected"]))
    longest = len(prompt_ids) + max(len(chosen), len(rejected))
    if not within_length(longest, data.filters.min_length, data.filters.max_length):
        return "length_filter"
    if longest > data.max_length:
        prompt_ids = prompt_ids[-data.max_prompt_length:]
        room = data.max_length - len(prompt_ids)
        chosen, rejected = chosen[:room], rejected[:room]
    if not chosen or not rejected:
        return "response_truncated_away"
    tokenized: dict[str, Any] = {"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected}
    if row.get("margin") is not None:
        tokenized["margin"] = row["margin"]
    return tokenized


def tokenize_rows(tokenizer: Any, rows: list[dict], data: DataSpec, kind: str,
                  name: str = "train") -> tuple[list[dict[str, Any]], TokenizationReport]:
    """Tokenize every row (kind 'sft' or 'preference'); dropped rows are counted and logged."""
    tokenize = tokenize_sft_row if kind == "sft" else tokenize_preference_row
    report = TokenizationReport()
    kept = []
    for row in rows:
        result = tokenize(tokenizer, row, data)
        if isinstance(result, str):
            report.drop(result)
            continue
        kept.append(result)
    report.kept = len(kept)
    if report.dropped:
        logger.warning("%s data: dropped %d of %d examples (%s)", name, sum(report.dropped.values()), len(rows),
                       ", ".join(f"{reason}: {count}" for reason, count in sorted(report.dropped.items())))
    if rows and not kept:
        raise NoUsableExamples(
            f"every {name} example was dropped ({dict(report.dropped)}); raise data.max_length "
            f"({data.max_length}) or lower data.max_prompt_length ({data.max_prompt_length}) / relax data.filters"
        )
    return kept, report


def reward_model_row(tokenized: dict[str, Any]) -> dict[str, Any]:
    """A preference row as RewardTrainer's pre-tokenized shape: whole sequences per side."""
    row = {"chosen_ids": tokenized["prompt_ids"] + tokenized["chosen_ids"],
           "rejected_ids": tokenized["prompt_ids"] + tokenized["rejected_ids"]}
    if "margin" in tokenized:
        row["margin"] = tokenized["margin"]
    return row

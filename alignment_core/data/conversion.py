"""Turn validated records of any supported format into TRL's conversational dataset rows.

SFT rows are ``{"messages": [...]}`` (per-message ``weight`` kept, plus ``tools`` when the record
declares them); preference rows are ``{"prompt": [messages], "chosen": [assistant turn], "rejected":
[assistant turn]}`` with an optional ``margin``. String prompts become one user turn through ``data.chat``
so every stage renders alike. Messages come out in the shape chat templates read: text content as a
string, OpenAI's older ``function_call`` / ``function`` role as ``tool_calls`` / ``tool``.
"""

from __future__ import annotations

from typing import Any

from alignment_core.data.chat import Messages, as_assistant_turn, as_messages
from alignment_core.data.formats import (
    PREFERENCE_FORMATS,
    SUPERVISED_FORMATS,
    DataFormatError,
    split_implicit_prompt,
)


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message as chat templates expect it (content a string; tools in the current OpenAI names)."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):  # OpenAI's text parts, validated as such in data.formats
        message["content"] = "".join(part["text"] for part in content)
    elif content is None:
        message["content"] = ""  # a tool-call-only turn; templates print content, "None" would be trained on
    if "function_call" in message:
        call = message.pop("function_call")
        message.setdefault("tool_calls", [{"type": "function", "function": call}])
    if message.get("role") == "function":
        message["role"] = "tool"
    return message


def normalize_messages(messages: Messages) -> Messages:
    return [normalize_message(message) for message in messages]


def record_tools(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tools a conversation may call: ``tools``, or the older ``functions`` in the tools shape."""
    if record.get("tools"):
        return list(record["tools"])
    if record.get("functions"):
        return [{"type": "function", "function": function} for function in record["functions"]]
    return None


def instruction_prompt(record: dict) -> str:
    """The user turn of an instruction record: the instruction, then the optional input."""
    extra = (record.get("input") or "").strip()
    return f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]


def to_sft_row(record: dict, fmt: str) -> dict[str, Any]:
    """One supervised record as ``{"messages"}`` (+ ``tools``); assistant turns with ``weight: 0`` keep it."""
    if fmt == "messages":
        row: dict[str, Any] = {"messages": normalize_messages(record["messages"])}
        tools = record_tools(record)
        if tools:
            row["tools"] = tools
        return row
    if fmt == "instruction":
        return {"messages": as_messages(instruction_prompt(record)) + as_assistant_turn(record["output"])}
    if fmt == "prompt_completion":
        prompt = record["prompt"]
        prompt = normalize_messages(as_messages(prompt)) if isinstance(prompt, list) or prompt.strip() else []
        return {"messages": prompt + normalize_messages(as_assistant_turn(record["completion"]))}
    raise DataFormatError(f"format '{fmt}' is not supervised data; expected one of {sorted(SUPERVISED_FORMATS)}")


def _response_turn(value: str | Messages) -> Messages:
    turn = normalize_messages(as_assistant_turn(value))
    return [message for message in turn if message.get("role") == "assistant"] or turn


def to_preference_row(record: dict, fmt: str) -> dict[str, Any]:
    """One preference record as ``{"prompt", "chosen", "rejected"}`` message lists (plus ``margin``)."""
    if fmt == "preference":
        if "prompt" in record:
            prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        else:
            prompt, chosen, rejected = split_implicit_prompt(record["chosen"], record["rejected"])
        row = {
            "prompt": normalize_messages(as_messages(prompt)),
            "chosen": _response_turn(chosen),
            "rejected": _response_turn(rejected),
        }
        if "margin" in record:
            row["margin"] = float(record["margin"])
        return row
    if fmt == "openai_preference":
        chosen = record.get("preferred_output", record.get("preferred_completion"))
        rejected = record.get("non_preferred_output", record.get("non_preferred_completion"))
        return {
            "prompt": normalize_messages(record["input"]["messages"]),
            "chosen": _response_turn(chosen),
            "rejected": _response_turn(rejected),
        }
    raise DataFormatError(f"format '{fmt}' is not preference data; expected one of {sorted(PREFERENCE_FORMATS)}")


def to_row(record: dict, fmt: str, method: str) -> dict[str, Any]:
    """Convert for the method: supervised data for SFT, preference data for reward modelling and DPO."""
    if method == "supervised":
        return to_sft_row(record, fmt)
    return to_preference_row(record, fmt)

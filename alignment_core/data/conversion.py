"""Turn validated records of any supported format into TRL's conversational dataset rows.

SFT rows are ``{"messages": [...]}`` (per-message ``weight`` kept); preference rows are
``{"prompt": [messages], "chosen": [assistant turn], "rejected": [assistant turn]}`` with an optional
``margin``. String prompts become one user turn through ``data.chat`` so every stage renders alike.
"""

from __future__ import annotations

from typing import Any

from alignment_core.data.chat import Messages, as_assistant_turn, as_messages
from alignment_core.data.formats import PREFERENCE_FORMATS, SUPERVISED_FORMATS, DataFormatError


def instruction_prompt(record: dict) -> str:
    """The user turn of an instruction record: the instruction, then the optional input."""
    extra = (record.get("input") or "").strip()
    return f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]


def to_sft_row(record: dict, fmt: str) -> dict[str, Messages]:
    """One supervised record as ``{"messages"}``; assistant turns with ``weight: 0`` keep that weight."""
    if fmt == "messages":
        return {"messages": [dict(message) for message in record["messages"]]}
    if fmt == "instruction":
        return {"messages": as_messages(instruction_prompt(record)) + as_assistant_turn(record["output"])}
    if fmt == "prompt_completion":
        prompt = as_messages(record["prompt"]) if record["prompt"].strip() else []
        return {"messages": prompt + as_assistant_turn(record["completion"])}
    raise DataFormatError(f"format '{fmt}' is not supervised data; expected one of {sorted(SUPERVISED_FORMATS)}")


def _response_turn(value: str | Messages) -> Messages:
    turn = as_assistant_turn(value)
    return [message for message in turn if message.get("role") == "assistant"] or turn


def to_preference_row(record: dict, fmt: str) -> dict[str, Any]:
    """One preference record as ``{"prompt", "chosen", "rejected"}`` message lists (plus ``margin``)."""
    if fmt == "preference":
        row = {
            "prompt": as_messages(record["prompt"]),
            "chosen": _response_turn(record["chosen"]),
            "rejected": _response_turn(record["rejected"]),
        }
        if "margin" in record:
            row["margin"] = float(record["margin"])
        return row
    if fmt == "openai_preference":
        chosen = record.get("preferred_output", record.get("preferred_completion"))
        rejected = record.get("non_preferred_output", record.get("non_preferred_completion"))
        return {
            "prompt": list(record["input"]["messages"]),
            "chosen": _response_turn(chosen),
            "rejected": _response_turn(rejected),
        }
    raise DataFormatError(f"format '{fmt}' is not preference data; expected one of {sorted(PREFERENCE_FORMATS)}")


def to_row(record: dict, fmt: str, method: str) -> dict[str, Any]:
    """Convert for the method: supervised data for SFT, preference data for reward modelling and DPO."""
    if method == "supervised":
        return to_sft_row(record, fmt)
    return to_preference_row(record, fmt)

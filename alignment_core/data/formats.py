"""Detect and validate the JSONL formats alignd trains on; errors name the line and the field.

Formats:
- ``messages``: OpenAI chat ``{"messages": [{"role", "content", "weight"?}, ...]}``
- ``instruction``: ``{"instruction", "input"?, "output"}``
- ``prompt_completion``: ``{"prompt", "completion"}``
- ``preference``: ``{"prompt", "chosen", "rejected"}`` (strings or message lists; optional "margin")
- ``openai_preference``: ``{"input": {"messages"}, "preferred_output", "non_preferred_output"}``
  (also the older ``preferred_completion`` / ``non_preferred_completion`` names)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = {"system", "user", "assistant", "tool", "developer"}
PREFERENCE_FORMATS = {"preference", "openai_preference"}
SUPERVISED_FORMATS = {"messages", "instruction", "prompt_completion"}
# Which formats each method can train on (prompt-only data for PPO comes from any of them).
METHOD_FORMATS = {
    "supervised": SUPERVISED_FORMATS,
    "reward_model": PREFERENCE_FORMATS,
    "dpo": PREFERENCE_FORMATS,
    "ppo": SUPERVISED_FORMATS | PREFERENCE_FORMATS | {"prompt_only"},
}


class DataFormatError(ValueError):
    """A record that cannot be used; carries the 1-based line number and the offending field."""

    def __init__(self, message: str, line: int | None = None, field: str | None = None):
        self.line, self.field, self.reason = line, field, message
        where = f"line {line}" if line is not None else "data"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FormatReport:
    format: str
    num_examples: int


def _require_text(record: dict, key: str, line: int, allow_empty: bool = False) -> None:
    if key not in record:
        raise DataFormatError("missing", line, key)
    if not isinstance(record[key], str):
        raise DataFormatError(f"must be a string, got {type(record[key]).__name__}", line, key)
    if not allow_empty and not record[key].strip():
        raise DataFormatError("must not be empty", line, key)


def _validate_messages(messages: Any, line: int, field: str, need_assistant: bool) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataFormatError("must be a non-empty list of messages", line, field)
    for index, message in enumerate(messages):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise DataFormatError("must be an object with 'role' and 'content'", line, where)
        role = message.get("role")
        if role not in ROLES:
            raise DataFormatError(f"unknown role {role!r}; expected one of {sorted(ROLES)}", line, f"{where}.role")
        content = message.get("content")
        if role != "assistant" or "tool_calls" not in message:
            if not isinstance(content, str):
                raise DataFormatError("must be a string", line, f"{where}.content")
        weight = message.get("weight")
        if weight is not None and weight not in (0, 1):
            raise DataFormatError("must be 0 or 1", line, f"{where}.weight")
    if need_assistant and not any(message["role"] == "assistant" for message in messages):
        raise DataFormatError("needs at least one assistant message", line, field)


def _validate_turn(value: Any, line: int, field: str) -> None:
    """A preference side or prompt: a string or a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError("must not be empty", line, field)
    elif isinstance(value, list):
        _validate_messages(value, line, field, need_assistant=False)
    else:
        raise DataFormatError("must be a string or a list of messages", line, field)


def detect_format(record: dict) -> str:
    """Name the format of one record from its keys (no validation of values)."""
    if "messages" in record:
        return "messages"
    if "preferred_output" in record or "preferred_completion" in record:
        return "openai_preference"
    if "chosen" in record or "rejected" in record:
        return "preference"
    if "instruction" in record:
        return "instruction"
    if "completion" in record:
        return "prompt_completion"
    if "prompt" in record:
        return "prompt_only"
    raise DataFormatError(
        "unrecognised record; expected 'messages', 'instruction'/'output', 'prompt'/'completion', "
        "'prompt'/'chosen'/'rejected' or 'input'/'preferred_output'/'non_preferred_output'"
    )


def validate_record(record: Any, line: int, expected: str = "auto") -> str:
    """Validate one parsed record; returns its format."""
    if not isinstance(record, dict):
        raise DataFormatError(f"must be a JSON object, got {type(record).__name__}", line)
    try:
        fmt = detect_format(record) if expected == "auto" else expected
    except DataFormatError as error:
        raise DataFormatError(error.reason, line) from None
    if fmt == "messages":
        _validate_messages(record.get("messages"), line, "messages", need_assistant=True)
    elif fmt == "instruction":
        _require_text(record, "instruction", line)
        if "input" in record and not isinstance(record["input"], str):
            raise DataFormatError("must be a string", line, "input")
        _require_text(record, "output", line)
    elif fmt == "prompt_completion":
        _require_text(record, "prompt", line, allow_empty=True)
        _require_text(record, "completion", line)
    elif fmt == "prompt_only":
        _validate_turn(record.get("prompt"), line, "prompt")
    elif fmt == "preference":
        for key in ("prompt", "chosen", "rejected"):
            if key not in record:
                raise DataFormatError("missing", line, key)
            _validate_turn(record[key], line, key)
        if "margin" in record and not isinstance(record["margin"], (int, float)):
            raise DataFormatError("must be a number", line, "margin")
    elif fmt == "openai_preference":
        prompt = record.get("input")
        if not isinstance(prompt, dict) or "messages" not in prompt:
            raise DataFormatError("must be an object with 'messages'", line, "input")
        _validate_messages(prompt["messages"], line, "input.messages", need_assistant=False)
        for new, old in (("preferred_output", "preferred_completion"),
                         ("non_preferred_output", "non_preferred_completion")):
            key = new if new in record else old
            if key not in record:
                raise DataFormatError("missing", line, new)
            _validate_turn(record[key], line, key)
    else:
        raise DataFormatError(f"unknown format {fmt!r}", line)
    return fmt


def iter_jsonl(lines: Iterable[str | bytes]) -> Iterator[tuple[int, Any]]:
    """Parse JSONL, yielding (line number, record); blank lines are skipped."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(f"not valid UTF-8 ({error.reason})", number) from None
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"invalid JSON: {error.msg} at column {error.colno}", number) from None


def validate_jsonl(lines: Iterable[str | bytes], expected: str = "auto") -> FormatReport:
    """Validate every record; all records must share one format."""
    fmt: str | None = None
    count = 0
    for number, record in iter_jsonl(lines):
        record_format = validate_record(record, number, expected)
        if fmt is None:
            fmt = record_format
        elif record_format != fmt:
            raise DataFormatError(f"format {record_format!r} differs from earlier lines ({fmt!r})", number)
        count += 1
    if fmt is None:
        raise DataFormatError("the file holds no records")
    return FormatReport(format=fmt, num_examples=count)


def validate_file(path: str | Path, expected: str = "auto") -> FormatReport:
    with open(path, "rb") as stream:
        return validate_jsonl(stream, expected)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, "rb") as stream:
        return [record for _, record in iter_jsonl(stream)]


def check_method_accepts(method: str, fmt: str) -> None:
    """Raise when `method` cannot train on data of format `fmt`."""
    allowed = METHOD_FORMATS.get(method)
    if allowed is not None and fmt not in allowed:
        raise DataFormatError(f"method '{method}' needs data in one of {sorted(allowed)}, got '{fmt}'")

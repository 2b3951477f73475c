"""Detect and validate the JSONL formats alignd trains on; errors name the line and the field.

Formats:
- ``messages``: OpenAI chat ``{"messages": [{"role", "content", "weight"?}, ...], "tools"?}``; assistant turns
  may carry ``tool_calls`` (or the older ``function_call``), content may be a list of text parts

- ShareGPT ``{"conversations": [{"from": "human" | "gpt" | ..., "value"}], "system"?}`` is read as ``messages``
- ``instruction``: ``{"instruction", "input"?, "output"}``
- ``prompt_completion``: ``{"prompt", "completion"}`` (strings or message lists)
- ``preference``: ``{"prompt", "chosen", "rejected"}`` (strings or message lists; optional "margin"); without
  "prompt", the part chosen and rejected share is the prompt (TRL's implicit prompt)
- ``openai_preference``: ``{"input": {"messages"}, "preferred_output", "non_preferred_output"}``
  (also the older ``preferred_completion`` / ``non_preferred_completion`` names)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = {"system", "user", "assistant", "tool", "developer", "function"}  # "function": OpenAI's pre-tools name
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
        where = [f"line {line}"] if line is not None else []
        if field:
            where.append(f"field '{field}'")
        # A problem of the whole file (no records, a method that cannot use it) is the message alone.
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


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


def _validate_content(content: Any, line: int, field: str) -> None:
    """A message's content: a string, or OpenAI's list of text parts (images cannot train a text model)."""
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise DataFormatError("must be a string or a list of text parts", line, field)
    for index, part in enumerate(content):
        where = f"{field}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            detail = f"a '{kind}' part" if isinstance(kind, str) else "not a text part"
            raise DataFormatError(f"{detail}; only text parts ({{'type': 'text', 'text': ...}}) can be trained on",
                                  line, where)
        if not isinstance(part.get("text"), str):
            raise DataFormatError("must be a string", line, f"{where}.text")


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
        calls = role == "assistant" and ("tool_calls" in message or "function_call" in message)
        # An assistant turn that only calls a tool has no text (OpenAI sends null or leaves content out).
        if not (calls and message.get("content") is None):
            _validate_content(message.get("content"), line, f"{where}.content")
        if calls:
            _validate_tool_calls(message, line, where)
        weight = message.get("weight")
        if weight is not None and weight not in (0, 1):
            raise DataFormatError("must be 0 or 1", line, f"{where}.weight")
    if need_assistant and not any(message["role"] == "assistant" for message in messages):
        raise DataFormatError("needs at least one assistant message", line, field)


def _validate_function(function: Any, line: int, field: str) -> None:
    """A called or declared function: an object with a non-empty string 'name' (training renders the name)."""
    if not isinstance(function, dict):
        raise DataFormatError("must be an object with 'name' and 'arguments'", line, field)
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataFormatError("missing" if name is None else "must be a non-empty string", line, f"{field}.name")
    if "arguments" in function and not isinstance(function["arguments"], (str, dict)):
        raise DataFormatError("must be a JSON string or an object", line, f"{field}.arguments")


def _validate_tool_calls(message: dict, line: int, where: str) -> None:
    """An assistant turn's ``tool_calls`` (OpenAI's ``{"type", "function": {"name", "arguments"}}``) or older
    ``function_call``."""
    if "function_call" in message:
        _validate_function(message["function_call"], line, f"{where}.function_call")
    calls = message.get("tool_calls", [])
    if not isinstance(calls, list):
        raise DataFormatError("must be a list of tool calls", line, f"{where}.tool_calls")
    for index, call in enumerate(calls):
        field = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict):
            raise DataFormatError("must be an object with 'function': {'name', 'arguments'}", line, field)
        # The flat {"name", "arguments"} shape some exporters write is read too (data.chat does).
        if "function" in call:
            _validate_function(call["function"], line, f"{field}.function")
        else:
            _validate_function(call, line, field)


def _validate_tools(record: dict, line: int) -> None:
    """A chat's declared ``tools`` (or older ``functions``): the chat template renders them as JSON schemas."""
    for key in ("tools", "functions"):
        declared = record.get(key)
        if declared is None:
            continue
        if not isinstance(declared, list):
            raise DataFormatError("must be a list of function definitions", line, key)
        for index, tool in enumerate(declared):
            field = f"{key}[{index}]"
            if key == "tools" and not (isinstance(tool, dict) and isinstance(tool.get("function"), dict)):
                raise DataFormatError("must be an object with 'type': 'function' and 'function': {'name', ...}",
                                      line, field)
            _validate_function(tool["function"] if key == "tools" else tool, line,
                               f"{field}.function" if key == "tools" else field)


def _validate_turn(value: Any, line: int, field: str, response: bool = False) -> None:
    """A preference side or prompt: a string or a list of messages (a response's list holds the assistant's turn,
    which is what gets scored)."""
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError("must not be empty", line, field)
    elif isinstance(value, list):
        _validate_messages(value, line, field, need_assistant=response)
    else:
        raise DataFormatError("must be a string or a list of messages", line, field)


def _validate_margin(margin: Any, line: int) -> None:
    # json.loads reads NaN and Infinity, and true is an int to Python: each would reach the reward loss.
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise DataFormatError("must be a number", line, "margin")
    if not math.isfinite(margin):
        raise DataFormatError(f"must be a finite number, got {margin}", line, "margin")


def split_implicit_prompt(chosen: Any, rejected: Any, line: int | None = None) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) of a pair without "prompt": the part both sides share is the prompt.

    Message lists split at the first message that differs; strings where the text first differs (before a
    space that precedes it), as TRL's ``extract_prompt`` does.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        shared, unit = _common_prefix_length(chosen, rejected), "messages"
        nothing_shared = shared == 0
    elif isinstance(chosen, str) and isinstance(rejected, str):
        shared, unit = _common_prefix_length(chosen, rejected), "text"
        if shared > 0 and chosen[shared - 1] == " ":
            shared -= 1  # the space belongs to the answer, as in TRL
        nothing_shared = not chosen[:shared].strip()
    else:
        raise DataFormatError("no 'prompt': chosen and rejected must then both be strings or both message lists",
                              line, "prompt")
    if nothing_shared:
        raise DataFormatError(f"no 'prompt', and chosen and rejected do not start with the same {unit}; "
                              "add a 'prompt' field", line, "prompt")
    if shared == len(chosen) or shared == len(rejected):
        raise DataFormatError(f"no 'prompt', and one side holds nothing after the {unit} both share",
                              line, "chosen" if shared == len(chosen) else "rejected")
    return chosen[:shared], chosen[shared:], rejected[shared:]


# What preference datasets call their prompt column (Intel/orca_dpo_pairs: "question"; others "query", "input").
PROMPT_ALIASES = ("question", "query", "input", "instruction")


def _split_or_name_the_prompt_column(record: dict, line: int) -> None:
    """A pair without "prompt" must share its prompt; when it does not and the record has a column that looks like
    the prompt, the error says to rename it."""
    try:
        split_implicit_prompt(record["chosen"], record["rejected"], line)
    except DataFormatError as error:
        alias = next((key for key in PROMPT_ALIASES if isinstance(record.get(key), (str, list))), None)
        if alias is None or error.field != "prompt":
            raise
        raise DataFormatError(f"{error.reason}; this record's '{alias}' looks like the prompt: rename it to 'prompt'",
                              line, "prompt") from None


def _common_prefix_length(first: Sequence[Any], second: Sequence[Any]) -> int:
    shared = 0
    while shared < min(len(first), len(second)) and first[shared] == second[shared]:
        shared += 1
    return shared


def detect_format(record: dict) -> str:
    """Name the format of one record from its keys (no validation of values)."""
    if "chosen" in record and "rejected" in record:
        # Before "messages": UltraFeedback-style pairs also carry the chosen conversation as "messages", and read as
        # chat they could never train DPO (a spec's data.format: messages still reads them as chat).
        return "preference"
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
        "unrecognised record; expected 'messages', 'conversations' (ShareGPT), 'instruction'/'output', "
        "'prompt'/'completion', 'prompt'/'chosen'/'rejected' or 'input'/'preferred_output'/'non_preferred_output'"
    )


def validate_record(record: Any, line: int, expected: str = "auto") -> str:
    """Validate one parsed record; returns its format."""
    if not isinstance(record, dict):
        hint = ""
        if isinstance(record, list):
            # On line 1 it may be the whole file as one array; further down it is one record written as a list.
            hint = f" (a JSON array: JSONL needs one JSON object per line; {JQ_FIX})" if line == 1 else \
                " (each line must be one JSON object, e.g. {\"messages\": [...]})"
        raise DataFormatError(f"must be a JSON object, got {type(record).__name__}{hint}", line)
    try:
        fmt = detect_format(record) if expected == "auto" else expected
    except DataFormatError as error:
        raise DataFormatError(error.reason, line) from None
    if fmt == "messages":
        _validate_messages(record.get("messages"), line, "messages", need_assistant=True)
        _validate_tools(record, line)
    elif fmt == "instruction":
        _require_text(record, "instruction", line)
        if record.get("input") is not None and not isinstance(record["input"], str):  # Alpaca files hold null too
            raise DataFormatError("must be a string", line, "input")
        _require_text(record, "output", line)
    elif fmt == "prompt_completion":
        # Strings, or TRL's conversational shape: prompt and completion as message lists.
        if isinstance(record.get("prompt"), list):
            _validate_messages(record["prompt"], line, "prompt", need_assistant=False)
        else:
            _require_text(record, "prompt", line, allow_empty=True)
        if isinstance(record.get("completion"), list):
            _validate_messages(record["completion"], line, "completion", need_assistant=True)
        else:
            _require_text(record, "completion", line)
    elif fmt == "prompt_only":
        _validate_turn(record.get("prompt"), line, "prompt")
    elif fmt == "preference":
        for key in ("chosen", "rejected"):
            if key not in record:
                raise DataFormatError("missing", line, key)
            _validate_turn(record[key], line, key, response=True)
        if "prompt" in record:
            _validate_turn(record["prompt"], line, "prompt")
        else:
            _split_or_name_the_prompt_column(record, line)
        if "margin" in record:
            _validate_margin(record["margin"], line)
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
            _validate_turn(record[key], line, key, response=True)
    else:
        raise DataFormatError(f"unknown format {fmt!r}", line)
    return fmt


UTF8_BOM = "\ufeff"
# Byte-order marks of encodings that are not UTF-8 (Windows editors save "Unicode" as UTF-16).
OTHER_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}


JQ_FIX = "jq -c '.[]' data.json > data.jsonl converts it"
# What datasets are often saved as instead of JSONL, by their first bytes, with the command that converts each.
BINARY_KINDS = {
    b"\x1f\x8b": "a gzip-compressed file; upload the uncompressed JSONL (gunzip -k FILE)",
    b"PK\x03\x04": "a zip archive; upload the JSONL file inside it (unzip FILE)",
    b"PAR1": "a Parquet file (as Hugging Face datasets are stored); convert it with python -c \"import pandas; "
             "pandas.read_parquet('data.parquet').to_json('data.jsonl', orient='records', lines=True)\"",
}


def _not_jsonl_hint(text: str) -> str:
    """Why a first line that does not parse may be a whole JSON document rather than JSONL."""
    head = text.strip()
    if "\r" in head:  # the file's only line: its records end in a bare CR, which is not a line break here
        return ("; the lines end in a lone CR (classic Mac line endings): JSONL needs LF or CRLF "
                "(tr '\\r' '\\n' < in.jsonl > out.jsonl)")
    if head.startswith("["):
        return f"; this looks like a JSON array: JSONL needs one JSON object per line ({JQ_FIX})"
    if head.startswith("{") and not head.endswith("}"):
        return "; this looks like JSON spread over several lines: JSONL needs each record on one line"
    return ""


# ShareGPT speakers (FastChat, axolotl, LLaMA-Factory) and the OpenAI role each one is.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "function_call": "assistant", "system": "system", "tool": "tool", "observation": "tool",
                  "function_response": "tool"}


def sharegpt_as_messages(record: dict, line: int) -> dict:
    """A ShareGPT record in OpenAI's messages shape (its other keys kept); errors name the turn."""
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise DataFormatError("must be a non-empty list of turns", line, "conversations")
    messages = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        messages.append({"role": "system", "content": record["system"]})
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise DataFormatError("must be an object with 'from' and 'value'", line, where)
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise DataFormatError(f"unknown speaker {speaker!r}; expected one of {sorted(SHAREGPT_ROLES)}", line,
                                  f"{where}.from")
        if not isinstance(turn.get("value"), str):
            raise DataFormatError("must be a string", line, f"{where}.value")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn["value"]})
    rest = {key: value for key, value in record.items() if key not in ("conversations", "system")}
    return {**rest, "messages": messages}


def dolly_as_instruction(record: dict, line: int) -> dict:
    """A Dolly record (databricks-dolly-15k: instruction, context, response) in the Alpaca names; errors name
    Dolly's fields."""
    for key in ("response", "context"):
        value = record.get(key)
        if key == "response" and (not isinstance(value, str) or not value.strip()):
            raise DataFormatError("must be a non-empty string", line, key)
        if value is not None and not isinstance(value, str):
            raise DataFormatError("must be a string", line, key)
    rest = {key: value for key, value in record.items() if key not in ("context", "response")}
    return {**rest, "input": record.get("context"), "output": record["response"]}


def iter_jsonl(lines: Iterable[str | bytes]) -> Iterator[tuple[int, Any]]:
    """Parse JSONL, yielding (line number, record); blank lines and a UTF-8 byte-order mark are skipped.

    ShareGPT records come out as OpenAI ``messages`` records and Dolly's as Alpaca's, so every reader (validation,
    stages, PPO's prompts) sees one shape per kind."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            if number == 1:
                encoding = next((name for bom, name in OTHER_BOMS.items() if raw.startswith(bom)), None)
                if encoding:
                    raise DataFormatError(f"the file is {encoding}-encoded; save it as UTF-8", number)
                kind = next((hint for magic, hint in BINARY_KINDS.items() if raw.startswith(magic)), None)
                if kind:
                    raise DataFormatError(f"not JSONL text but {kind}", number)
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(f"not valid UTF-8 ({error.reason} at byte {error.start}); "
                                      "save the file as UTF-8", number) from None
        if number == 1:
            raw = raw.removeprefix(UTF8_BOM)  # Windows editors write one; it is not part of the JSON
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            hint = _not_jsonl_hint(raw) if number == 1 else ""
            raise DataFormatError(f"invalid JSON: {error.msg} at column {error.colno}{hint}", number) from None
        except RecursionError:
            # The parser recurses per bracket: a few thousand nested arrays would otherwise escape as a crash.
            raise DataFormatError("invalid JSON: nested too deeply", number) from None
        if isinstance(record, dict) and "conversations" in record and "messages" not in record:
            record = sharegpt_as_messages(record, number)
        elif isinstance(record, dict) and "instruction" in record and "response" in record and "output" not in record:
            record = dolly_as_instruction(record, number)
        yield number, record


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

"""PPO's prompts: taken from any supported data file, served in a seeded, resumable order."""

from __future__ import annotations

import random
from pathlib import Path

from alignment_core.data.chat import Messages
from alignment_core.data.demo_sources import resolve_data_path
from alignment_core.data.formats import (
    DataFormatError,
    detect_format,
    read_jsonl,
    split_implicit_prompt,
    validate_record,
)
from alignment_core.specs import DataSpec

Prompt = str | Messages


def prompt_of(record: dict, line: int, fmt: str = "auto") -> Prompt:
    """The prompt part of one record of any format PPO accepts."""
    fmt = validate_record(record, line, fmt)
    if fmt == "preference" and "prompt" not in record:  # TRL's implicit prompt: what chosen and rejected share
        return split_implicit_prompt(record["chosen"], record["rejected"], line)[0]
    if fmt in ("prompt_only", "prompt_completion", "preference"):
        return record["prompt"]
    if fmt == "instruction":
        return f"{record['instruction']}\n\n{record['input']}" if record.get("input") else record["instruction"]
    if fmt == "openai_preference":
        return record["input"]["messages"]
    messages = record["messages"]  # "messages": the conversation up to its last user turn
    last_user = max((index for index, message in enumerate(messages) if message["role"] == "user"), default=None)
    if last_user is None:
        raise DataFormatError("needs a user message to prompt with", line, "messages")
    return messages[: last_user + 1]


def load_prompts(files: list[str], fmt: str = "auto", max_examples: int | None = None) -> list[Prompt]:
    """Every prompt in `files`, in file order; errors name the file and line."""
    prompts: list[Prompt] = []
    for file in files:
        for line, record in enumerate(read_jsonl(Path(resolve_data_path(file))), start=1):
            try:
                prompts.append(prompt_of(record, line, fmt if fmt != "auto" else detect_format(record)))
            except DataFormatError as error:
                raise DataFormatError(f"{file}: {error.reason}", error.line, error.field) from None
            if max_examples is not None and len(prompts) >= max_examples:
                return prompts
    if not prompts:
        raise DataFormatError(f"no prompts in {files}")
    return prompts


def load_training_prompts(data: DataSpec) -> list[Prompt]:
    return load_prompts(data.train_files, data.format, data.max_examples)


class PromptCursor:
    """Walks the prompts in a fresh seeded order each epoch; its position is part of a checkpoint."""

    def __init__(self, prompts: list[Prompt], seed: int):
        self.prompts, self.seed = prompts, seed
        self.epoch, self.position = 0, 0
        self._order = self._order_for(0)

    def _order_for(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self, size: int) -> list[Prompt]:
        batch: list[Prompt] = []
        while len(batch) < size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._order_for(self.epoch)
            batch.append(self.prompts[self._order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._order_for(self.epoch)

"""From a data spec to conversational train / eval rows: read, validate, convert, filter, split.

Every record is validated with its file and line named in errors; all records of a method must be in
a format that method trains on. Token-level work (truncation, length filters, packing) follows in
``data.tokenization`` and ``data.packing``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment_core.data.conversion import to_row
from alignment_core.data.demo_sources import resolve_data_path
from alignment_core.data.filters import deduplicate, passes_min_score
from alignment_core.data.formats import DataFormatError, check_method_accepts, iter_jsonl, validate_record
from alignment_core.specs import DataSpec


class DataFileError(DataFormatError):
    """A DataFormatError that also names the file."""

    def __init__(self, path: str, error: DataFormatError):
        self.path = path
        super().__init__(error.reason, error.line, error.field)
        self.args = (f"{path}: {error}",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class TrainingRows:
    """Conversational rows ready for tokenization, with what was dropped on the way."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    format: str
    dropped: dict[str, int] = field(default_factory=dict)


def read_rows(path: str, method: str, expected_format: str = "auto",
              min_score: float | None = None) -> tuple[list[dict[str, Any]], str, int]:
    """Validate and convert one JSONL file; returns (rows, format, records dropped by min_score)."""
    resolved = resolve_data_path(path)
    if not Path(resolved).is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows: list[dict[str, Any]] = []
    fmt: str | None = None
    below_score = 0
    with open(resolved, "rb") as stream:
        try:
            for line, record in iter_jsonl(stream):
                record_format = validate_record(record, line, expected_format)
                if fmt is None:
                    check_method_accepts(method, record_format)
                    fmt = record_format
                elif record_format != fmt:
                    raise DataFormatError(f"format {record_format!r} differs from earlier lines ({fmt!r})", line)
                if not passes_min_score(record, min_score):
                    below_score += 1
                    continue
                rows.append(to_row(record, record_format, method))
        except DataFormatError as error:
            raise DataFileError(path, error) from None
    if fmt is None:
        raise DataFileError(path, DataFormatError("the file holds no records"))
    return rows, fmt, below_score


def split_rows(rows: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded train / eval split holding out `share` of the rows (at least one when share > 0)."""
    if share <= 0:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(rows) * share))
    if held >= len(rows):
        raise ValueError(f"data.eval_split {share} leaves no training rows out of {len(rows)}")
    held_out = set(order[:held])
    return ([row for index, row in enumerate(rows) if index not in held_out],
            [row for index, row in enumerate(rows) if index in held_out])


def load_training_rows(data: DataSpec, method: str, seed: int) -> TrainingRows:
    """Read the spec's train and eval files for `method`, filtered, split and capped."""
    train: list[dict[str, Any]] = []
    formats: list[str] = []
    dropped: dict[str, int] = {}
    for path in data.train_files:
        rows, fmt, below = read_rows(path, method, data.format, data.filters.min_score)
        train += rows
        formats.append(fmt)
        dropped["min_score"] = dropped.get("min_score", 0) + below
    eval_rows: list[dict[str, Any]] = []
    for path in data.eval_files:
        eval_rows += read_rows(path, method, data.format)[0]
    if data.filters.deduplicate:
        before = len(train)
        train = deduplicate(train)
        dropped["duplicate"] = before - len(train)
    if not eval_rows:
        train, eval_rows = split_rows(train, data.eval_split, seed)
    if data.max_examples is not None and len(train) > data.max_examples:
        dropped["max_examples"] = len(train) - data.max_examples
        train = train[: data.max_examples]
    if not train:
        raise ValueError("no training examples left after filtering (data.filters / data.max_examples)")
    return TrainingRows(train=train, eval=eval_rows, format=formats[0], dropped=dropped)


def as_dataset(rows: list[dict[str, Any]]):
    """A ``datasets.Dataset`` of the rows (TRL's conversational shape)."""
    from datasets import Dataset

    return Dataset.from_list(rows)

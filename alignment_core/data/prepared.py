"""A stage's data in one call: rows from the spec, tokenized with loss masks, packed if asked.

The datasets come out pre-tokenized in the shapes TRL's trainers take as they are:
SFT ``{"input_ids", "labels"}`` (plus ``seq_lengths`` when packed), reward modelling
``{"chosen_ids", "rejected_ids"}`` and DPO ``{"prompt_ids", "chosen_ids", "rejected_ids"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment_core.data.packing import pack_examples
from alignment_core.data.tokenization import TokenizationReport, reward_model_row, tokenize_rows
from alignment_core.data.training_data import as_dataset, load_training_rows
from alignment_core.specs import JobSpec


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    format: str
    dropped: dict[str, int] = field(default_factory=dict)
    train_report: TokenizationReport | None = None


def prepare_sft_data(spec: JobSpec, tokenizer: Any) -> PreparedData:
    """Tokenized (and, if data.packing, packed) SFT train / eval datasets."""
    rows = load_training_rows(spec.data, "supervised", spec.training.seed)
    train, report = tokenize_rows(tokenizer, rows.train, spec.data, "sft", "train")
    evaluation = tokenize_rows(tokenizer, rows.eval, spec.data, "sft", "eval")[0] if rows.eval else []
    if spec.data.packing:
        train = pack_examples(train, spec.data.max_length)
        # Eval stays unpacked: its loss is then per example, comparable across runs.
    return PreparedData(as_dataset(train), as_dataset(evaluation) if evaluation else None, rows.format,
                        {**rows.dropped, **report.dropped}, report)


def prepare_preference_data(spec: JobSpec, tokenizer: Any, for_reward_model: bool) -> PreparedData:
    """Tokenized preference pairs for DPO (prompt / chosen / rejected ids) or a reward model (whole sequences)."""
    method = "reward_model" if for_reward_model else "dpo"
    rows = load_training_rows(spec.data, method, spec.training.seed)
    train, report = tokenize_rows(tokenizer, rows.train, spec.data, "preference", "train")
    evaluation = tokenize_rows(tokenizer, rows.eval, spec.data, "preference", "eval")[0] if rows.eval else []
    if for_reward_model:
        train = [reward_model_row(row) for row in train]
        evaluation = [reward_model_row(row) for row in evaluation]
        use_margin = getattr(spec.method, "margin", False)
        for row in train + evaluation:
            if use_margin:
                row.setdefault("margin", 0.0)  # pairs without a margin field get none
            else:
                row.pop("margin", None)
    return PreparedData(as_dataset(train), as_dataset(evaluation) if evaluation else None, rows.format,
                        {**rows.dropped, **report.dropped}, report)

"""Trainer arguments fit the transformers release that is installed (the GPU image ships an older one)."""

from __future__ import annotations

import dataclasses

from alignment_core.stages.training_arguments import _for_installed_transformers


@dataclasses.dataclass
class ArgumentsBeforeTheRename:  # the fields of TrainingArguments in transformers 5.17
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict | None = None


def test_checkpointing_arguments_use_the_old_names_where_the_new_ones_are_unknown() -> None:
    arguments = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    renamed = _for_installed_transformers(ArgumentsBeforeTheRename, arguments)
    assert renamed == {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    ArgumentsBeforeTheRename(**renamed)


def test_current_transformers_keeps_the_new_names() -> None:
    from trl import SFTConfig

    arguments = {"activation_checkpointing": True}
    assert _for_installed_transformers(SFTConfig, arguments) == arguments

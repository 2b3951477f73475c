"""The reference model of DPO and PPO: the policy with its adapters switched off, or a frozen copy.

With LoRA the frozen base *is* the reference, so no second copy is held in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from alignment_core.modeling.loading import load_causal_lm
from alignment_core.specs import ModelSpec


class NotAnAdapterModel(TypeError):
    """disabled_adapters was given a model without PEFT adapters; load a reference copy instead."""


def is_peft_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def disabled_adapters(model: Any) -> Iterator[Any]:
    """Yield `model` computing its base (the reference): PEFT adapters are off inside the block."""
    if not is_peft_model(model):
        raise NotAnAdapterModel(
            f"{type(model).__name__} has no adapters to disable; use load_reference() for a frozen copy"
        )
    with model.disable_adapter():
        yield model


def load_reference(model: ModelSpec, policy: Any, device: torch.device | str | None = None) -> Any | None:
    """A frozen eval-mode reference, or None when `policy` has adapters (then use disabled_adapters(policy))."""
    if is_peft_model(policy):
        return None
    return load_causal_lm(model, device=device, trainable=False)

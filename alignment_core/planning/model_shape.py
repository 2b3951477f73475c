"""A model's shape from its config alone: the model is built on the meta device, so no weights load.

That counts parameters exactly for any architecture transformers knows, and lists the linear layers
that LoRA adapts and bitsandbytes quantizes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from alignment_core.modeling.model_folders import ModelKind, config_source

# Output heads: never quantized, never LoRA targets for 'all-linear'.
HEAD_NAMES = ("lm_head", "score", "classifier")


class ModelConfigUnavailable(ValueError):
    """The model's config.json cannot be read (unknown name, no network, unsupported architecture)."""


@dataclass(frozen=True)
class LinearLayer:
    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelShape:
    total_params: int
    linears: tuple[LinearLayer, ...]  # inside the blocks: quantized by QLoRA, adapted by LoRA
    head_params: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    kv_dim: int  # key (= value) width per token per layer, for the KV cache
    vocab_size: int
    source: str = ""  # where the config came from, for the planner's output

    @property
    def linear_params(self) -> int:
        return sum(layer.in_features * layer.out_features for layer in self.linears)

    @property
    def block_params(self) -> int:
        """Parameters of one transformer block (what ZeRO-3 gathers at a time)."""
        return self.linear_params // max(self.num_layers, 1)

    def lora_params(self, r: int, target_modules: list[str] | str) -> int:
        """Trainable LoRA parameters: r * (in + out) for every adapted linear."""
        return sum(r * (layer.in_features + layer.out_features) for layer in self.linears
                   if is_lora_target(layer.name, target_modules))


def is_lora_target(name: str, target_modules: list[str] | str) -> bool:
    if target_modules == "all-linear":
        return True
    if isinstance(target_modules, str):  # peft treats a single string as a regex over the full name
        import re

        return re.fullmatch(target_modules, name) is not None
    return any(name == target or name.endswith(f".{target}") for target in target_modules)


@functools.lru_cache(maxsize=32)
def read_model_shape(name_or_path: str, kind: ModelKind = "causal_lm") -> ModelShape:
    """The shape of the model behind `name_or_path` (adapter folders: their base architecture)."""
    from transformers import AutoConfig

    source = config_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelConfigUnavailable(
            f"model.name_or_path '{name_or_path}': cannot read its config ({error})"
        ) from error
    return shape_from_config(config, kind, source=f"config.json of {source}")


def shape_from_config(config, kind: ModelKind = "causal_lm", source: str = "") -> ModelShape:
    """Count a transformers config's parameters and list its linear layers by building it on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "sequence_scorer":
        config.num_labels = 1
    model_class = AutoModelForSequenceClassification if kind == "sequence_scorer" else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = model_class.from_config(config)
    except ValueError as error:  # an architecture this transformers cannot build (remote code, too new)
        raise ModelConfigUnavailable(f"cannot build a {config.model_type} model from its config ({error})") from error

    linears, head_params = [], 0
    for name, module in model.named_modules():
        dims = _linear_dims(module, torch)
        if dims is None:
            continue
        if name.split(".")[-1] in HEAD_NAMES:
            head_params += dims[0] * dims[1]
        else:
            linears.append(LinearLayer(name, *dims))
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or hidden // heads
    return ModelShape(
        total_params=sum(parameter.numel() for parameter in model.parameters()),
        linears=tuple(linears),
        head_params=head_params,
        hidden_size=hidden,
        intermediate_size=getattr(text_config, "intermediate_size", None) or 4 * hidden,
        num_layers=text_config.num_hidden_layers,
        num_heads=heads,
        kv_dim=kv_heads * head_dim,
        vocab_size=text_config.vocab_size,
        source=source,
    )


def _linear_dims(module, torch) -> tuple[int, int] | None:
    """(in, out) of a linear layer, including GPT-2's transposed Conv1D; None for anything else."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return module.weight.shape[0], module.weight.shape[1]
    return None

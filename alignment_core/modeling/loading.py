"""Load tokenizers, policies and scorers (reward / value models) the way every stage needs them.

Models come through ``from_pretrained`` (hub id, local folder, 'alignd-tiny' or an alignd output
folder). A folder holding a PEFT adapter is loaded as its base with the adapter merged in, so an
SFT -> DPO / PPO chain continues from the SFT output. LoRA is attached right after loading: with a
4-bit base on a CPU, any earlier inference forward would repack the weights (see STACK.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from alignment_core.modeling.model_folders import (
    ModelKind,
    adapter_base,
    adapter_kind,
    local_folder,
    merged_weights_folder,
    stable_model_name,
)
from alignment_core.modeling.tiny import resolve_model_path
from alignment_core.specs import DistributionSpec, LoraSpec, ModelSpec, QuantizationSpec

logger = logging.getLogger(__name__)

# A plain role-tagged template for models that ship none. Assistant turns sit inside
# {% generation %} so assistant-only losses can find them; the EOS ends the turn so the model stops.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "### Assistant:\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n\n"
    "{% else %}"
    "### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

# Heads that must stay in full precision and trainable when the base is quantized.
SCORER_HEADS = ["score", "classifier"]


def resolve_device(distribution: DistributionSpec | None = None) -> torch.device:
    """cuda:LOCAL_RANK when the spec asks for GPUs and CUDA is there, else the CPU."""
    if distribution is not None and distribution.gpus_per_worker > 0 and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(
    model: ModelSpec, device: torch.device | str | None = None, trainable: bool = False
) -> torch.dtype:
    """The weight dtype: as named; for 'auto', bfloat16 on a bf16 GPU unless every weight trains.

    Weights that train stay float32 (the trainer autocasts to bf16): in bf16 an AdamW step of lr 2e-5 on
    a weight of 0.02 is below half a unit in the last place and rounds away (measured on H100, see
    docs/benchmarks.md). A frozen base under LoRA / QLoRA, a reference or a reward model is bf16.
    """
    if model.dtype != "auto":
        return getattr(torch, model.dtype)
    if trainable and model.lora is None:
        return torch.float32
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(name_or_path: str) -> Any:
    """The model's tokenizer with a pad token and a chat template (a default one if it ships none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_source(name_or_path))
    if tokenizer.pad_token is None:
        # Reusing an existing token keeps the vocabulary (and the embedding matrix) unchanged.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError(f"model.name_or_path '{name_or_path}': tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def lora_config(lora: LoraSpec, task_type: str) -> Any:
    """The peft LoraConfig for a spec's LoRA part; task_type is 'CAUSAL_LM' or 'SEQ_CLS'."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type=task_type,
    )


def quantization_config(q: QuantizationSpec, skip_modules: list[str] | None = None) -> Any:
    """bitsandbytes settings for a QLoRA base: 4-bit NF4 / FP4 (double quantization, compute dtype) or 8-bit."""
    from transformers import BitsAndBytesConfig

    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        llm_int8_skip_modules=skip_modules,
    )


def load_causal_lm(
    model: ModelSpec, device: torch.device | str | None = None, trainable: bool = True, seed: int | None = None
) -> Any:
    """A causal LM per the spec: LoRA / QLoRA attached when set and trainable; frozen in eval mode otherwise."""
    return _load(model, "causal_lm", device, trainable, seed)


def load_sequence_scorer(
    model: ModelSpec, device: torch.device | str | None = None, trainable: bool = True, seed: int | None = 0
) -> Any:
    """A one-label sequence classifier (reward / value model); a causal checkpoint gets a new, seeded head."""
    return _load(model, "sequence_scorer", device, trainable, seed)


def _load(spec: ModelSpec, kind: ModelKind, device: Any, trainable: bool, seed: int | None) -> Any:
    device = torch.device(device) if device is not None else resolve_device()
    dtype = resolve_dtype(spec, device, trainable=trainable)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.attn_implementation is not None:
        kwargs["attn_implementation"] = spec.attn_implementation
    if kind == "sequence_scorer":
        kwargs["num_labels"] = 1
    if spec.quantization is not None:
        from alignment_core.stages.performance import graphed_checkpointing, release_freed_pages_for_graphs

        if trainable and graphed_checkpointing(spec, device):
            release_freed_pages_for_graphs()
        skip = [*SCORER_HEADS, "lm_head"] if kind == "sequence_scorer" else None
        kwargs["quantization_config"] = quantization_config(spec.quantization, skip_modules=skip)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else "cpu"

    with _seeded(seed):
        model = load_pretrained(kind, spec.name_or_path, **kwargs)
        if spec.quantization is None:
            model.to(device)
        if kind == "sequence_scorer":
            _set_scorer_pad_token(model, spec.name_or_path)
        if trainable:
            model = _make_trainable(model, spec, kind)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    return model


def load_pretrained(kind: ModelKind, name_or_path: str, **kwargs: Any) -> Any:
    """``from_pretrained`` for plain checkpoints; adapter folders load as their base with the adapter merged."""
    folder = local_folder(name_or_path)
    source = str(folder) if folder is not None else name_or_path
    if folder is None or not (folder / "adapter_config.json").exists():
        return _model_class(kind).from_pretrained(source, **kwargs)
    merged = merged_weights_folder(folder)
    if merged is not None:  # full weights saved beside the adapter: load them like any checkpoint
        return _model_class(kind).from_pretrained(str(merged), **kwargs)
    if "quantization_config" in kwargs or adapter_kind(folder) != kind:
        # Merge in full precision into a scratch folder, then load that like any checkpoint: merging
        # into 4-bit weights would lose precision, and a head cannot change class in memory.
        with _scratch_folder() as scratch:
            merge_adapter_folder(folder, scratch)
            return _model_class(kind).from_pretrained(str(scratch), **kwargs)
    from peft import PeftModel

    base = load_pretrained(kind, adapter_base(folder), **kwargs)
    # peft loads an adapter for inference and freezes every weight; merged, this is a plain model again and
    # whether it trains is the caller's choice (a full fine-tune of a LoRA job's output had nothing to train).
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload().requires_grad_(True)


def merge_adapter_folder(folder: Path, target: str | Path) -> None:
    """Write the adapter in `folder` merged into its base, in full precision, as an HF checkpoint at `target`."""
    from peft import PeftModel

    kind = adapter_kind(folder)
    extra = {"num_labels": 1} if kind == "sequence_scorer" else {}
    base = load_pretrained(kind, adapter_base(folder), dtype=torch.float32, **extra)
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    merged.save_pretrained(target)
    load_tokenizer(str(folder)).save_pretrained(target)


def _make_trainable(model: Any, spec: ModelSpec, kind: ModelKind) -> Any:
    if spec.quantization is not None:
        from alignment_core.stages.performance import prepare_kbit_model, supports_bf16

        # On a bf16 GPU the trainer autocasts to bf16: the frozen non-quantized weights stay bf16.
        device = next(model.parameters()).device
        keep = spec.quantization.compute_dtype == "bfloat16" and supports_bf16(device)
        model = prepare_kbit_model(model, spec.gradient_checkpointing, keep_compute_dtype=keep)
        _disable_cpu_weight_repacking(model)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.gradient_checkpointing:
        model.config.use_cache = False
    if spec.lora is not None:
        from peft import get_peft_model

        task_type = "SEQ_CLS" if kind == "sequence_scorer" else "CAUSAL_LM"
        model = get_peft_model(model, lora_config(spec.lora, task_type))
        # Record the name the user gave (absolute for folders), so the saved adapter finds its base.
        model.peft_config["default"].base_model_name_or_path = stable_model_name(spec.name_or_path)
    from alignment_core.stages.performance import graphed_checkpointing

    if graphed_checkpointing(spec, next(model.parameters()).device):
        from alignment_core.modeling.chunked_4bit import chunk_4bit_linears
        from alignment_core.modeling.graphed_layers import install_graphed_checkpointing

        # Launch-bound QLoRA steps: each checkpointed layer replays CUDA graphs (the trainer is told not to
        # re-enable torch's checkpoint function, performance.training_overrides). The graphs' memory pool is
        # sized by the largest dequantised weight: dequantise large ones in row blocks.
        chunk_4bit_linears(model)
        install_graphed_checkpointing(model)
    model.train()
    return model


def _disable_cpu_weight_repacking(model: Any) -> None:
    # bitsandbytes repacks 4-bit weights for fast CPU inference (AVX512-BF16) on the first no-grad
    # eval forward; LoRA then gets no gradients. Training models never take that path.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _set_scorer_pad_token(model: Any, name_or_path: str) -> None:
    # The classifier reads the score at the last non-pad token, so it must know the pad id.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(name_or_path).pad_token_id


def _model_class(kind: ModelKind) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == "sequence_scorer" else AutoModelForCausalLM


def _tokenizer_source(name_or_path: str) -> str:
    folder = local_folder(name_or_path)
    if folder is None:
        return resolve_model_path(name_or_path)
    has_tokenizer = any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    if not has_tokenizer and (folder / "adapter_config.json").exists():
        return _tokenizer_source(adapter_base(folder))
    return str(folder)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """New heads and LoRA weights drawn from `seed` without disturbing the caller's random state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _scratch_folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="alignd-merge-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

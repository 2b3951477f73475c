"""The speed settings every stage applies on top of its TRL config, measured by bench/gpu (docs/benchmarks.md).

Each setting is one that keeps the loss equal to the plain path on the same batch (tests/perf): weights in
bf16 instead of fp32 + autocast, SDPA (or FlashAttention when installed) attention, Liger's fused Triton
kernels for RMSNorm / SwiGLU / RoPE when installed, no activation checkpointing unless the spec asks for
it, fused AdamW. On a CPU the stage's own settings stand (bf16 emulation is ~50x slower there).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from alignment_core.specs import JobSpec, ModelSpec


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def on_cuda(device: Any) -> bool:
    """True when `device` (a string, torch.device or None for 'whatever torch sees') is a CUDA GPU."""
    import torch

    if device is None:
        return torch.cuda.is_available()
    return str(device).startswith("cuda") and torch.cuda.is_available()


def supports_bf16(device: Any) -> bool:
    import torch

    return on_cuda(device) and torch.cuda.is_bf16_supported()


def liger_usable(device: Any) -> bool:
    """Liger's kernels are Triton programs: they need a CUDA GPU and both packages."""
    return on_cuda(device) and _installed("liger_kernel") and _installed("triton")


def attention_implementation(spec: JobSpec, device: Any) -> str:
    """The spec's choice, else FlashAttention 2 when its package is there, else PyTorch's SDPA."""
    if spec.model.attn_implementation:
        return spec.model.attn_implementation
    if on_cuda(device) and _installed("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def model_load_overrides(spec: JobSpec, device: Any) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained`: the attention kernel, and bf16 weights on a bf16 GPU for a
    frozen base (LoRA / QLoRA: half the memory, no per-step fp32->bf16 weight casts).

    Weights that train stay fp32 under bf16 autocast: in bf16, an AdamW step of lr 2e-5 on a weight of
    0.02 is below half a unit in the last place and rounds away (measured on the 1.1B model: loss after
    3 steps 8.3 in bf16 weights against 7.1 with fp32 weights, same batches).
    """
    import torch

    kwargs: dict[str, Any] = {"attn_implementation": attention_implementation(spec, device)}
    if spec.model.dtype != "auto":
        kwargs["dtype"] = getattr(torch, spec.model.dtype)
    elif supports_bf16(device) and spec.model.lora is not None:
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    return kwargs


def padding_free_pays(spec: JobSpec, device: Any) -> bool:
    """Whether packing rows padding-free is faster, not only correct: with FlashAttention 2 the kernel reads
    the sequence boundaries; with SDPA transformers builds a dense block mask (TRL's packing measured 1.76x
    slower on an H100). The stage decides packing from the spec; this is advice for the planner."""
    return attention_implementation(spec, device) == "flash_attention_2"


def precompute_reference(spec: JobSpec) -> bool:
    """DPO: score the frozen reference once up front. It saves the reference forward in every step, so it
    pays from the second epoch on; with one epoch it only moves the same work before training."""
    method = spec.method
    if method.type != "dpo":
        return False
    return bool(method.precompute_ref_log_probs) or (spec.training.epochs or 1.0) > 1.0


def training_overrides(spec: JobSpec, device: Any) -> dict[str, Any]:
    """TrainingArguments / TRL config fields that make a stage fast on `device` without changing its loss."""
    overrides: dict[str, Any] = {
        # TRL turns checkpointing on by default; it recomputes the forward (~30% of a step). Memory-bound
        # jobs ask for it in the spec (the planner recommends it).
        "gradient_checkpointing": spec.model.gradient_checkpointing,
    }
    if spec.model.gradient_checkpointing:
        overrides["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if graphed_checkpointing(spec.model, device):
        # The loader already made every layer checkpoint through CUDA graphs (modeling.graphed_layers); the
        # trainer enabling checkpointing again would put torch's checkpoint function back.
        overrides.update(activation_checkpointing=False, gradient_checkpointing=False)
        overrides.pop("gradient_checkpointing_kwargs", None)
    if not on_cuda(device):
        overrides.update(bf16=False, use_liger_kernel=False)
        return overrides
    overrides.update(
        bf16=supports_bf16(device),
        optim="adamw_torch_fused",
        dataloader_pin_memory=True,
        use_liger_kernel=liger_usable(device),
    )
    if spec.method.type == "reward_model" and overrides["use_liger_kernel"]:
        # Liger's fused linear cross-entropy replaces a causal LM's forward; a scorer has no LM head.
        overrides["liger_kernel_config"] = {"fused_linear_cross_entropy": False, "cross_entropy": False}
    if spec.method.type == "dpo":
        overrides["precompute_ref_log_probs"] = precompute_reference(spec)
        if overrides["precompute_ref_log_probs"]:
            # No gradients in the reference pass: four times the training micro-batch fits.
            overrides["precompute_ref_batch_size"] = 4 * (spec.training.batch_size or 8)
    return overrides


def rollout_static_cache(device: Any) -> bool:
    """PPO sampling with a static KV cache, which transformers compiles into CUDA graphs: on a GPU each decode
    step is otherwise ~25 ms of kernel launches whatever the batch (1B policy, 64 x 128 new tokens: 5.1 s
    eager, 1.35 s static on an H200). The first rollout pays the compilation (~40 s). CPU: no gain."""
    return on_cuda(device)


def keep_adapter_inputs_in_compute_dtype(model: Any, autocast_bf16: bool) -> int:
    """Under bf16 autocast, stop peft from casting each LoRA input to the adapters' fp32 before lora_A.

    Autocast casts it straight back to bf16 for the matmul, so the cast is a full-size copy that changes
    nothing (bf16 -> fp32 -> bf16 is exact); dropout then also runs on half the bytes. On the H100 these
    copies were 24% of an SFT LoRA step's GPU time (1.1B, 32 x 1024, torch.profiler). Without autocast the
    cast is what makes the adapter matmul's dtypes agree, so it stays. Returns the layers changed.
    """
    if not autocast_bf16:
        return 0
    changed = 0
    for module in model.modules():
        if getattr(module, "cast_input_dtype_enabled", False) and hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


def prepare_kbit_model(model: Any, gradient_checkpointing: bool, keep_compute_dtype: bool) -> Any:
    """Freeze a k-bit (QLoRA) base for adapter training: peft's prepare_model_for_kbit_training, or with
    `keep_compute_dtype` the same without its fp32 upcast of the non-quantized weights.

    The upcast (embeddings, LM head, norms) keeps fp16 training stable. Under bf16 autocast those weights
    were loaded in bf16, every matmul computes in bf16 anyway, and fp32 copies cost memory: 7.24B shape,
    1 x 512, training peak 4.98 GiB with the upcast against 4.26 GiB without (H100, docs/benchmarks.md,
    run J; the fp32 embeddings and head are 1.05 GB against 0.52, and the fp32 residual stream doubles the
    checkpointed block inputs). Losses agree to bf16 rounding (tests/perf).
    """
    if not keep_compute_dtype:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (peft's hook is for reentrant).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def graphed_checkpointing(model: ModelSpec, device: Any) -> bool:
    """Whether the checkpointed decoder layers replay CUDA graphs (`modeling.graphed_layers`).

    It pays where the step is bound by Python and kernel launches rather than the GPU: QLoRA, whose every
    linear is a bitsandbytes dequantisation call, at the small micro-batches its memory budget allows (7.24B,
    1 x 512 on an H100: 3.8-4.9x the plain loop, docs/benchmarks.md runs M-T). It needs checkpointing (the
    graphs replace its recompute) and a CUDA GPU. `model.cuda_graphs` ("on" / "off") overrides the choice;
    "on" forces it for any checkpointed model (plain LoRA and full fine-tuning are not measured on a GPU).
    """
    choice = model.cuda_graphs
    if choice == "off" or not model.gradient_checkpointing or not on_cuda(device):
        return False
    if choice == "on":
        return True
    return model.quantization is not None and model.lora is not None


def release_freed_pages_for_graphs() -> bool:
    """Let the caching allocator return freed memory page by page (expandable segments), before a QLoRA load
    whose layers will replay CUDA graphs. Quantizing while loading frees bf16 staging blocks inside segments
    the 4-bit weights keep alive; an eager step reuses that cache for its activations, but a graph's memory
    comes from its own pool, so the cache would sit beside the pool (7.24B, H100: 0.24 GiB, training peak
    reserved 4.60 GiB with graphs against 4.36 eager; docs/benchmarks.md, run P). Process-wide and only for
    segments created from now on; graph pools keep ordinary segments. Returns whether the setting took.
    """
    import torch

    try:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    except (AttributeError, RuntimeError):
        return False
    return True

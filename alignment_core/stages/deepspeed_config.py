"""The DeepSpeed config a spec asks for, handed to the trainers as ``TrainingArguments(deepspeed=dict)``.

"auto" values are filled in by the Hugging Face integration from the TrainingArguments, so batch
sizes, learning rate and clipping are stated once, in the spec's training section.

The same spec must give the same update with and without DeepSpeed (tests/core/test_core_deepspeed.py):
- Mixed precision is DeepSpeed's ``torch_autocast``: fp32 weights under bf16 autocast, as the plain
  path trains. DeepSpeed's ``bf16`` mode casts the weights themselves to bf16 for the forward, so
  updates below half a bf16 unit (lr 2e-5 on a 0.02 weight) vanish from norms and embeddings: on the
  1.1B model the second loss was 9.59 against 8.50 (docs/benchmarks.md, run F).
- The optimizer is the trainer's own: a DeepSpeed "optimizer" section makes the trainer hand it one flat
  parameter list, so weight decay also hit the norm weights and biases the trainer exempts.
"""

from __future__ import annotations

from typing import Any

from alignment_core.specs import DistributionSpec


def deepspeed_config(distribution: DistributionSpec, mixed_precision: str | None) -> dict[str, Any] | None:
    """A ZeRO 1/2/3 config dict, or None when zero_stage is 0; mixed_precision is 'bf16', 'fp16' or None."""
    stage = distribution.zero_stage
    if stage == 0:
        return None
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if distribution.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": distribution.gpus_per_worker > 0}
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                # Full weights gathered on save, so checkpoints and the final model load without DeepSpeed.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
        if distribution.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": distribution.gpus_per_worker > 0}
    config: dict[str, Any] = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": False},
        # fp16 is chosen only for weights loaded in fp16, which the plain path cannot step either; DeepSpeed's
        # fp16 mode (fp32 master weights, loss scaling) is the one that trains them.
        "fp16": {"enabled": mixed_precision == "fp16"},
        # The trainer's torch AdamW (weight-decay groups, fused on a GPU), wrapped by ZeRO: no compiled
        # DeepSpeed op (fused_adam / cpu_adam take ~50 s to build). With offload DeepSpeed keeps it too.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if mixed_precision == "bf16":
        # No module communicates its gradients in bf16: fp32 reductions, as DDP does with fp32 weights.
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    return config


def trainer_overrides(config: dict[str, Any] | None) -> dict[str, Any]:
    """TrainingArguments fields a DeepSpeed config needs. The trainer's bf16 flag would switch DeepSpeed's bf16
    mode back on (the integration fills and checks ``bf16.enabled`` from it); torch_autocast replaces it."""
    if config is None or not config.get("torch_autocast", {}).get("enabled"):
        return {}
    return {"bf16": False}

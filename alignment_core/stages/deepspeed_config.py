"""The DeepSpeed config a spec asks for, handed to the trainers as ``TrainingArguments(deepspeed=dict)``.

"auto" values are filled in by the Hugging Face integration from the TrainingArguments, so batch
sizes, learning rate and clipping are stated once, in the spec's training section.
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
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # Full weights gathered on save, so checkpoints and the final model load without DeepSpeed.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
        if distribution.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": distribution.gpus_per_worker > 0}
    config: dict[str, Any] = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": mixed_precision == "bf16"},
        "fp16": {"enabled": mixed_precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if not distribution.offload_optimizer:
        # A plain torch optimizer needs no compiled DeepSpeed op (fused_adam / cpu_adam take ~50 s to build).
        # With an offloaded optimizer DeepSpeed requires its CPU Adam, so the trainer's optimizer is kept.
        config["zero_allow_untested_optimizer"] = True
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto", "torch_adam": True},
        }
    return config

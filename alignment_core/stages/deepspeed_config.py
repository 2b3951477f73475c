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

Gradient buckets: the integration's "auto" is hidden_size^2 elements (4.2M on the 1.1B model), ~260 reductions
a step; 2e8 elements per bucket took 2 x H200 ZeRO-2 from 0.213 s to 0.168 s a step (docs/benchmarks.md,
run I). Communicating the linears' gradients in bf16 (torch_autocast's lower_precision_safe_modules) was
slower there (0.176 s: the casts into a second bucket cost more than the halved traffic), so fp32 it stays.
"""

from __future__ import annotations

from typing import Any

from alignment_core.specs import DistributionSpec

# Gradient elements per reduction bucket (fp32: 800 MB; ZeRO keeps two buckets with overlap_comm).
BUCKET_ELEMENTS = 200_000_000
# Buckets shrink to a fifth of the trained parameters for small models (the buffers are allocated whole).
BUCKETS_PER_MODEL = 5
MIN_BUCKET_ELEMENTS = 1_000_000


def bucket_elements(trained_params: int | None) -> int | str:
    """Elements per reduce / all-gather bucket for a model training `trained_params` parameters ("auto" if
    unknown): a few large reductions a step instead of hundreds of small ones, even (NCCL's alignment)."""
    if trained_params is None:
        return "auto"
    size = min(BUCKET_ELEMENTS, max(MIN_BUCKET_ELEMENTS, -(-trained_params // BUCKETS_PER_MODEL)))
    return size + size % 2


def deepspeed_config(
    distribution: DistributionSpec, mixed_precision: str | None, trained_params: int | None = None
) -> dict[str, Any] | None:
    """A ZeRO 1/2/3 config dict, or None when zero_stage is 0; mixed_precision is 'bf16', 'fp16' or None;
    `trained_params` (the parameters that get gradients) sizes the communication buckets."""
    stage = distribution.zero_stage
    if stage == 0:
        return None
    bucket = bucket_elements(trained_params)
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": bucket,
    }
    if bucket != "auto":
        zero["allgather_bucket_size"] = bucket
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

"""Per-GPU memory estimate of a job: weights, gradients, optimizer states, activations, overhead.

The accounting follows what our loaders and trainers hold:
- weights in the spec's dtype; QLoRA keeps block linears in 4 / 8 bits (plus quantization constants)
  and the remaining parameters in bf16 on a bf16 GPU, else in float32 as peft's k-bit preparation does;
- LoRA parameters, their gradients and AdamW states in float32; full fine-tuning keeps gradients in
  the weight dtype and AdamW states in it too; DeepSpeed ZeRO-1/2/3 adds an fp32 master copy of its
  partition (12 B per parameter with the states), also over fp32 weights (torch_autocast keeps them);
- ZeRO-1 partitions optimizer states, ZeRO-2 also gradients, ZeRO-3 also weights, across all GPUs;
  offloading moves optimizer states / parameters to host memory;
- activations per transformer block from hidden and intermediate sizes (Korthikanti et al. 2022,
  adapted to gated MLPs; no s^2 attention term with SDPA / flash attention), only block inputs plus
  one block with gradient checkpointing, and the logits in float32 for the loss unless Liger's fused
  loss runs; LoRA drops the frozen linears' saved inputs and adds each adapter's (dropped-out) input;
  QLoRA's residual stream is float32 (peft's k-bit preparation); fitted to H100 peaks (docs/benchmarks.md);
- torch's AdamW step needs gradient-sized scratch once activations are freed;
- DPO and PPO add a frozen reference unless LoRA provides it; PPO adds a value model (trained like
  the policy) and a frozen reward model, and its generation phase needs a KV cache.
Numbers are estimates to be checked against measured peaks (bench/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alignment_core.planning.gpus import GIB, GpuInfo, gpu_info
from alignment_core.planning.model_shape import ModelConfigUnavailable, ModelShape, is_lora_target
from alignment_core.planning.shape_source import ShapeOverrides, resolve_model_shape
from alignment_core.specs import JobSpec

# CUDA context, cuBLAS and NCCL workspaces: present whatever the model.
CUDA_CONTEXT_BYTES = 1 * GIB
FP32 = 4
# Share of allocated memory the caching allocator loses to fragmentation (H100 measurements: 3-20%).
FRAGMENTATION = 0.08
# ZeRO's flat buffers and buckets: reserved was 14-20% above allocated (1.1B, ZeRO-2, 1 and 2 GPUs, runs I / K / L).
ZERO_FRAGMENTATION = 0.18
# DPO's LoRA policy activations per token against SFT's at the same settings: 69.4 against 92.9 KB per token
# and layer (1.1B LoRA all-linear, bf16 adapter inputs, 16 pairs x 512 and 32 x 1024, H100 run H); fitted,
# the cause is not established (docs/benchmarks.md, "Planner").
DPO_ACTIVATION_SHARE = 0.75


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed on each GPU (and on the host for offloaded state) by one training process."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    cpu_offloaded: int
    method: str  # full | lora | qlora
    num_gpus: int
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    gradient_checkpointing: bool
    micro_batch_size: int
    sequence_length: int
    total_params: int
    trainable_params: int
    gpu: GpuInfo
    notes: tuple[str, ...] = field(default=())
    model_source: str = ""  # where the model's shape came from (shape_source)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu.memory_bytes

    @property
    def gib(self) -> dict[str, float]:
        parts = ("weights", "gradients", "optimizer", "activations", "overhead", "total", "cpu_offloaded")
        return {name: round(getattr(self, name) / GIB, 2) for name in parts}

    def as_dict(self) -> dict:
        """JSON-ready summary (bytes, GiB and the settings the estimate assumed)."""
        return {
            "bytes": {name: getattr(self, name) for name in self.gib},
            "gib": self.gib,
            "gpu": {"name": self.gpu.name, "memory_gib": round(self.gpu.memory_gib, 1)},
            "fits": self.fits,
            "method": self.method,
            "num_gpus": self.num_gpus,
            "zero_stage": self.zero_stage,
            "offload_optimizer": self.offload_optimizer,
            "offload_params": self.offload_params,
            "gradient_checkpointing": self.gradient_checkpointing,
            "micro_batch_size": self.micro_batch_size,
            "sequence_length": self.sequence_length,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "model_source": self.model_source,
            "notes": list(self.notes),
        }


@dataclass
class _Footprint:
    weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    trainable: int = 0

    def add(self, other: _Footprint) -> None:
        self.weights += other.weights
        self.gradients += other.gradients
        self.optimizer += other.optimizer
        self.trainable += other.trainable


def method_name(spec: JobSpec) -> str:
    if spec.model.quantization is not None:
        return "qlora"
    return "lora" if spec.model.lora is not None else "full"


def gpu_count(spec: JobSpec) -> int:
    """GPUs the job spans (CPU jobs: one 'device' per worker)."""
    per_worker = spec.distribution.gpus_per_worker
    if per_worker <= 0:
        return spec.distribution.num_workers
    return max(1, math.ceil(spec.distribution.num_workers * per_worker))


def estimate_memory(spec: JobSpec, gpu: GpuInfo | str = "H100-80GB", fused_loss: bool | None = None,
                    overrides: ShapeOverrides | None = None) -> MemoryEstimate:
    """Per-GPU memory of `spec` on `gpu` (see the module docstring for what is counted).

    The policy's shape comes from shape_source: its config on disk, the table of known architectures, the
    hub, or `overrides` (which also change a found shape).

    `fused_loss`: the stage computes SFT / DPO losses with Liger's fused linear cross-entropy, which never
    holds the logits; None assumes so when liger_kernel is installed (workers share this image).
    """
    gpu = gpu_info(gpu)
    method = method_name(spec)
    policy_kind = "sequence_scorer" if spec.method_type == "reward_model" else "causal_lm"
    shape = resolve_model_shape(spec.model.name_or_path, policy_kind, overrides)
    weight_bytes = FP32 if spec.model.dtype == "float32" or (spec.model.dtype == "auto" and not gpu.bf16) else 2
    dist = spec.distribution
    num_gpus = gpu_count(spec)
    deepspeed = dist.zero_stage > 0
    notes: list[str] = []
    # The loader keeps weights that all train in fp32 (modeling.loading.resolve_dtype), with and without
    # DeepSpeed (its torch_autocast mode); bf16 autocast then computes in bf16 and caches a bf16 copy of
    # every weight for the step.
    trained_bytes = FP32 if method == "full" and spec.model.dtype == "auto" else weight_bytes
    act_bytes = 2 if gpu.bf16 else FP32
    autocast_copies = shape.total_params * 2 if trained_bytes == FP32 and gpu.bf16 else 0
    if fused_loss is None:
        import importlib.util

        fused_loss = importlib.util.find_spec("liger_kernel") is not None and gpu.bf16
    fused_loss = fused_loss and spec.method_type in ("supervised", "dpo")

    total = _Footprint()
    scorer_policy = policy_kind == "sequence_scorer"
    policy = _model_footprint(spec, shape, trained_bytes, trainable=True, deepspeed=deepspeed, scorer=scorer_policy)
    total.add(policy)
    if spec.method_type in ("dpo", "ppo"):
        if method == "full":
            total.add(_model_footprint(spec, shape, weight_bytes, trainable=False, deepspeed=deepspeed))
            notes.append("full fine-tuning holds a frozen reference copy of the policy")
        else:
            notes.append("reference = the policy with adapters disabled (no second copy)")
    if spec.method_type == "ppo":
        scorer_shape = resolve_model_shape(spec.model.name_or_path, "sequence_scorer", overrides)
        if spec.method.value_model == "separate":
            total.add(_model_footprint(spec, scorer_shape, weight_bytes, True, deepspeed, scorer=True))
            notes.append("value model: a second scorer trained like the policy")
        if spec.method.reward.type == "model":
            reward_shape = _reward_shape(spec, scorer_shape, notes)
            total.add(_model_footprint(spec, reward_shape, weight_bytes, trainable=False, deepspeed=deepspeed))
        else:
            notes.append(f"reward from '{spec.method.reward.type}': no reward model on these GPUs")

    # ZeRO partitions state across every GPU of the job; offloading moves it to host memory.
    weights, gradients, optimizer = total.weights, total.gradients, total.optimizer
    if dist.zero_stage >= 1:
        optimizer /= num_gpus
    if dist.zero_stage >= 2:
        gradients /= num_gpus
    if dist.zero_stage == 3:
        weights /= num_gpus
    cpu_offloaded = 0.0
    if dist.offload_optimizer:
        cpu_offloaded += optimizer
        optimizer = 0.0
        notes.append("optimizer states in host memory")
    if dist.offload_params:
        cpu_offloaded += weights
        weights = 0.0
        notes.append("parameters in host memory, gathered block by block")
    if not deepspeed and method == "full" and weight_bytes == 2:
        notes.append("without DeepSpeed AdamW keeps its states in the weight dtype (no fp32 master copy)")

    sequence_length, sequences = _sequences(spec)
    activations = _activations(spec, shape, sequence_length, sequences, act_bytes, policy_kind, fused_loss)
    if spec.method_type == "ppo":
        if spec.method.value_model == "separate":
            activations += _activations(spec, shape, sequence_length, sequences, act_bytes, "sequence_scorer")
        generation = _kv_cache(spec, shape, weight_bytes)
        if generation > activations:
            notes.append("the rollout KV cache is the activation peak")
        activations = max(activations, generation)

    # torch's foreach AdamW needs a gradient-sized scratch buffer during the step, after activations are
    # freed: it only raises the peak where it exceeds them.
    step_scratch = 0.0 if deepspeed else gradients
    if step_scratch > activations:
        notes.append("the optimizer step, not the backward pass, sets the peak")
    # Allocator fragmentation, then the CUDA context and workspaces.
    overhead = max(0.0, step_scratch - activations)
    fragmentation = ZERO_FRAGMENTATION if deepspeed else FRAGMENTATION
    overhead += fragmentation * (weights + gradients + optimizer + max(activations, step_scratch)) + CUDA_CONTEXT_BYTES
    overhead += autocast_copies
    if deepspeed:
        # Two reduce buckets of the gradients' dtype (stages.deepspeed_config sizes them).
        overhead += 2 * _bucket_elements(policy.trainable) * (FP32 if trained_bytes == FP32 else weight_bytes)
    if dist.zero_stage == 3:
        overhead += 2 * shape.block_params * weight_bytes  # the gathered block and the prefetched next one
    if method == "qlora":
        largest = max((layer.in_features * layer.out_features for layer in shape.linears), default=0)
        overhead += largest * weight_bytes  # a dequantized weight during its matmul

    return MemoryEstimate(
        weights=int(weights),
        gradients=int(gradients),
        optimizer=int(optimizer),
        activations=int(activations),
        overhead=int(overhead),
        cpu_offloaded=int(cpu_offloaded),
        method=method,
        num_gpus=num_gpus,
        zero_stage=dist.zero_stage,
        offload_optimizer=dist.offload_optimizer,
        offload_params=dist.offload_params,
        gradient_checkpointing=spec.model.gradient_checkpointing,
        micro_batch_size=spec.training.batch_size,
        sequence_length=sequence_length,
        total_params=shape.total_params,
        trainable_params=policy.trainable,
        gpu=gpu,
        notes=tuple(notes),
        model_source=shape.source,
    )


def quantized_bytes_per_param(spec: JobSpec, in_features: int) -> float:
    """Bytes per quantized weight, constants included (4-bit blocks of 64; 8-bit row scales)."""
    quant = spec.model.quantization
    if quant.bits == 8:
        return 1.0 + FP32 / in_features
    if quant.double_quant:  # 8-bit absmax per block of 64, fp32 second-level constant per 256 blocks
        return 0.5 + 1 / 64 + FP32 / (64 * 256)
    return 0.5 + FP32 / 64


def _model_footprint(
    spec: JobSpec, shape: ModelShape, weight_bytes: int, trainable: bool, deepspeed: bool, scorer: bool = False
) -> _Footprint:
    footprint = _Footprint()
    if spec.model.quantization is not None:
        quantized = sum(
            layer.in_features * layer.out_features * quantized_bytes_per_param(spec, layer.in_features)
            for layer in shape.linears
        )
        # peft's k-bit preparation upcasts the rest to fp32; on a bf16 GPU the stage keeps it in bf16
        # (stages.performance.prepare_kbit_model).
        rest_bytes = 2 if _kbit_kept_in_bf16(spec, weight_bytes) else FP32
        footprint.weights = quantized + (shape.total_params - shape.linear_params) * rest_bytes
    else:
        footprint.weights = shape.total_params * weight_bytes
    if not trainable:
        return footprint
    if spec.model.lora is not None:
        lora = spec.model.lora
        adapters = shape.lora_params(lora.r, lora.target_modules)
        footprint.trainable = adapters + (shape.head_params if scorer else 0)
        footprint.weights += footprint.trainable * FP32
        footprint.gradients = footprint.trainable * FP32
        footprint.optimizer = footprint.trainable * 2 * FP32
        return footprint
    footprint.trainable = shape.total_params
    footprint.gradients = shape.total_params * weight_bytes
    if deepspeed:
        # ZeRO's optimizer keeps its own fp32 copy of the partition beside the model's weights, fp32 or not.
        footprint.optimizer = shape.total_params * 3 * FP32  # fp32 master weights + two moments
    else:
        footprint.optimizer = shape.total_params * 2 * weight_bytes
    return footprint


def _kbit_kept_in_bf16(spec: JobSpec, dtype_bytes: int) -> bool:
    """Whether a QLoRA base keeps its non-quantized weights in bf16 (`dtype_bytes`: 2 on a bf16 GPU)."""
    quantization = spec.model.quantization
    return quantization is not None and quantization.compute_dtype == "bfloat16" and dtype_bytes == 2


def _bucket_elements(trained_params: int) -> int:
    from alignment_core.stages.deepspeed_config import bucket_elements

    size = bucket_elements(trained_params)
    return size if isinstance(size, int) else 0


def _reward_shape(spec: JobSpec, fallback: ModelShape, notes: list[str]) -> ModelShape:
    try:
        return resolve_model_shape(spec.method.reward.model, "sequence_scorer")
    except ModelConfigUnavailable:
        notes.append("reward model config not readable here: assumed shaped like the policy")
        return fallback


def _sequences(spec: JobSpec) -> tuple[int, int]:
    """(tokens per sequence, sequences per micro-batch): pairs for DPO / reward, prompt + answer for PPO."""
    batch = spec.training.batch_size
    if spec.method_type == "ppo":
        return spec.data.max_prompt_length + spec.method.max_new_tokens, batch
    if spec.method_type in ("dpo", "reward_model"):
        return spec.data.max_length, 2 * batch
    return spec.data.max_length, batch


def _activations(
    spec: JobSpec, shape: ModelShape, s: int, b: int, act_bytes: int, kind: str, fused_loss: bool = False
) -> float:
    h, i = shape.hidden_size, shape.intermediate_size
    quantization, lora = spec.model.quantization, spec.model.lora
    # peft's k-bit preparation casts norms and embeddings to float32, so QLoRA's residual stream is fp32,
    # unless the stage keeps them in bf16 (a bf16 GPU, bf16 compute dtype).
    if quantization is not None and not _kbit_kept_in_bf16(spec, act_bytes):
        act_bytes = FP32
    scale = act_bytes / 2  # the coefficients below count 2-byte activations
    # Attention 11 sbh, norms 4 sbh, gated MLP 2 sbh + 6 sbi (Korthikanti et al., adapted).
    per_block = (17 * s * b * h + 6 * s * b * i) * scale
    if lora is not None:
        # Frozen base weights need no weight gradient, so autograd keeps no copy of their inputs: the
        # attention and MLP linears' inputs (6 sbh + 2 sbi of the count above) go. Measured on the H100,
        # 1.1B, LoRA all-linear, 8-32 x 1024: 98.6 KB per token and layer against 98.9 KB from this model.
        per_block -= (6 * s * b * h + 2 * s * b * i) * scale
    if spec.model.attn_implementation == "eager":
        per_block += 5 * shape.num_heads * s * s * b * scale
    block_linear_inputs = sum(layer.in_features for layer in shape.linears) / max(shape.num_layers, 1)
    if quantization is not None and quantization.compute_dtype != "float32":
        per_block += s * b * 2 * block_linear_inputs  # each 4-bit matmul keeps its input cast to compute dtype
    if lora is not None:
        adapted_inputs = sum(
            layer.in_features for layer in shape.linears if is_lora_target(layer.name, lora.target_modules)
        ) / max(shape.num_layers, 1)
        # Each adapted layer's lora_A keeps its input (dropped out: a copy of its own) in the activation
        # dtype (autocast runs the fp32 adapters in bf16) and, with dropout, a one-byte mask.
        per_element = act_bytes + (1 if lora.dropout > 0 else 0)
        per_block += s * b * per_element * adapted_inputs
    if spec.model.gradient_checkpointing:
        blocks = shape.num_layers * s * b * h * act_bytes + per_block
    else:
        blocks = shape.num_layers * per_block
    if kind == "sequence_scorer":
        return blocks + s * b * h * act_bytes
    if spec.method_type == "dpo" and lora is not None:
        blocks *= DPO_ACTIVATION_SHARE
    if spec.method_type == "ppo":
        # PPO's own loop runs the models without Liger's fused RMSNorm / SwiGLU / RoPE, which keep fewer
        # intermediates: measured 1.42x the fused model's activations per token (H100, 1.1B, micro 8 / 32).
        blocks *= 1.42
    if fused_loss:  # Liger's fused linear cross-entropy: logits only for one chunk of tokens at a time
        return blocks
    # Logits, their float32 copy for the loss (none if already fp32) and its gradient.
    logit_bytes = act_bytes + (FP32 if act_bytes != FP32 else 0) + FP32
    return blocks + s * b * shape.vocab_size * logit_bytes


def _kv_cache(spec: JobSpec, shape: ModelShape, weight_bytes: int) -> float:
    tokens = spec.data.max_prompt_length + spec.method.max_new_tokens
    batch = spec.method.rollout_batch_size
    cache = 2 * shape.num_layers * tokens * batch * shape.kv_dim * weight_bytes
    return cache + batch * shape.vocab_size * FP32

"""The job spec: one pydantic schema shared by the REST API, the CLI's YAML files and the workers.

Every field carries a description and a default. Training defaults that depend on the method
(learning rate, epochs, batch size) are left as ``None`` by the user and filled from the method's
preset in ``JobSpec``'s validator, so a stored spec is always complete and explicit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MethodType = Literal["supervised", "reward_model", "dpo", "ppo", "orpo", "kto", "grpo"]
# Methods with a stage behind them today; the others are accepted names with a clear "not yet" error.
IMPLEMENTED_METHODS: tuple[str, ...] = ("supervised", "reward_model", "dpo", "ppo")

DataFormat = Literal[
    "auto", "messages", "instruction", "prompt_completion", "preference", "openai_preference"
]


class StrictModel(BaseModel):
    """Unknown fields are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSpec(StrictModel):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha; defaults to 2 * r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )

    @model_validator(mode="after")
    def _alpha_defaults_to_twice_rank(self) -> LoraSpec:
        if self.alpha is None:
            self.alpha = 2 * self.r
        return self


class QuantizationSpec(StrictModel):
    bits: Literal[4, 8] = Field(4, description="Load the frozen base weights in 4 or 8 bits (QLoRA).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype the 4-bit matmuls compute in."
    )


class ModelSpec(StrictModel):
    name_or_path: str = Field(
        ..., min_length=1,
        description="Hub id, local path, 'alignd-tiny' (the built-in tiny model) or another job's "
        "fine_tuned_model.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; 'auto' is bfloat16 on a GPU that supports it, else float32."
    )
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters instead of all weights.")
    quantization: QuantizationSpec | None = Field(None, description="QLoRA: quantized frozen base.")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; None lets transformers choose."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto", description="Checkpointed decoder layers replay CUDA graphs (needs gradient_checkpointing and a "
        "GPU); 'auto' does for QLoRA, whose small steps are bound by kernel launches.",
    )

    @model_validator(mode="after")
    def _quantization_needs_lora(self) -> ModelSpec:
        if self.quantization is not None and self.lora is None:
            raise ValueError("model.quantization (QLoRA) needs model.lora: quantized weights cannot be trained")
        return self


class FilterSpec(StrictModel):
    min_length: int | None = Field(None, ge=0, description="Drop examples with fewer tokens.")
    max_length: int | None = Field(None, ge=1, description="Drop examples with more tokens.")
    deduplicate: bool = Field(False, description="Drop exact duplicate examples.")
    min_score: float | None = Field(None, description="Drop examples whose 'score' field is lower.")


class DataSpec(StrictModel):
    train_files: list[str] = Field(..., min_length=1, description="JSONL files (paths or file ids).")
    eval_files: list[str] = Field(default_factory=list, description="Held-out JSONL files.")
    format: DataFormat = Field("auto", description="Force a data format instead of detecting it.")
    max_length: int = Field(512, ge=8, description="Longest tokenized example (prompt + response).")
    max_prompt_length: int = Field(256, ge=4, description="Longest prompt; longer prompts are cut from the left.")
    packing: bool = Field(False, description="Pack SFT examples into full sequences.")
    eval_split: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training data held out when no eval_files.")
    filters: FilterSpec = Field(default_factory=FilterSpec)
    max_examples: int | None = Field(None, ge=1, description="Use at most this many training examples.")

    @model_validator(mode="after")
    def _prompt_fits(self) -> DataSpec:
        if "max_prompt_length" not in self.model_fields_set:
            # Only max_length was chosen: the default prompt budget follows it rather than refusing the spec.
            self.max_prompt_length = min(self.max_prompt_length, self.max_length // 2)
        elif self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be smaller than "
                f"data.max_length ({self.max_length})"
            )
        return self


class TrainingSpec(StrictModel):
    learning_rate: float | None = Field(None, gt=0, le=1.0, description="Peak learning rate (preset).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training data (preset).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int | None = Field(None, ge=1, description="Examples per device per micro-batch (preset).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.0, ge=0.0, le=0.5, description="Share of steps spent warming up.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    # numpy's generator, which the trainers seed, takes 0 … 2**32 − 1.
    seed: int = Field(42, ge=0, le=2**32 - 1,
                      description="Seeds data order, initialisation of new heads and sampling.")
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (None: at the end).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (None: at the end).")
    save_total_limit: int | None = Field(3, ge=1, description="Keep at most this many checkpoints.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Evaluations without improvement.")
    load_best_model_at_end: bool = False
    metric_for_best_model: str = "eval_loss"


class DistributionSpec(StrictModel):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (processes).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; 0 trains on CPU.")
    cpus_per_worker: float = Field(1, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage; 0 runs without DeepSpeed.")
    offload_optimizer: bool = Field(False, description="ZeRO: keep optimizer states in CPU memory.")
    offload_params: bool = Field(False, description="ZeRO-3: keep parameters in CPU memory.")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> DistributionSpec:
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("distribution.offload_optimizer needs distribution.zero_stage 1, 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("distribution.offload_params needs distribution.zero_stage 3")
        return self


class SupervisedMethod(StrictModel):
    type: Literal["supervised"] = "supervised"
    assistant_only_loss: bool = Field(True, description="Loss on assistant / completion tokens only.")


class RewardModelMethod(StrictModel):
    type: Literal["reward_model"] = "reward_model"
    margin: bool = Field(False, description="Use a per-pair 'margin' field in the Bradley-Terry loss.")
    center_rewards_coefficient: float | None = Field(None, ge=0, description="Pull mean reward to 0.")


class DpoMethod(StrictModel):
    type: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, le=10, description="Strength of the KL constraint.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="cDPO: assumed label noise.")
    precompute_ref_log_probs: bool = Field(False, description="Score the reference once, before training.")
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="RPO: weight of the chosen responses' per-token negative log-likelihood added to the DPO loss; "
        "keeps DPO from lowering the chosen answers' likelihood along with the rejected ones.",
    )


class RewardSource(StrictModel):
    type: Literal["model", "function", "http", "serve"] = Field(
        "model", description="Where rewards come from during PPO rollouts."
    )
    model: str | None = Field(None, description="type=model: reward model path or a reward job's output.")
    function: str | None = Field(None, description="type=function: 'module:callable' or a built-in name.")
    url: str | None = Field(None, description="type=http: endpoint taking {prompts, completions}.")
    application: str | None = Field(None, description="type=serve: Ray Serve application name.")
    timeout_s: float = Field(60.0, gt=0)
    batch_size: int = Field(16, ge=1)
    replicas: int = Field(1, ge=1, le=64, description="Ray Serve replicas of the reward model (workers only).")
    gpus_per_replica: float = Field(0, ge=0, description="GPU fraction per reward replica; 0 scores on CPU.")

    @model_validator(mode="after")
    def _source_named(self) -> RewardSource:
        needed = {"model": "model", "function": "function", "http": "url", "serve": "application"}[self.type]
        if getattr(self, needed) is None and not (self.type == "serve" and self.model):
            raise ValueError(f"reward.{needed} is required when reward.type is '{self.type}'")
        return self


class PpoMethod(StrictModel):
    type: Literal["ppo"] = "ppo"
    reward: RewardSource = Field(..., description="The reward source scored during rollouts.")
    max_new_tokens: int = Field(32, ge=1, le=4096)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    rollout_batch_size: int = Field(16, ge=1, description="Prompts generated per PPO update.")
    mini_batch_size: int = Field(8, ge=1, description="Samples per PPO minibatch.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    clip_range: float = Field(0.2, gt=0, lt=1)
    value_clip_range: float = Field(0.2, gt=0)
    value_loss_coef: float = Field(0.1, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    kl_coef: float = Field(0.05, ge=0, description="Initial KL penalty coefficient.")
    adaptive_kl: bool = Field(False, description="Adapt kl_coef toward target_kl.")
    target_kl: float = Field(6.0, gt=0)
    kl_horizon: int = Field(10000, ge=1)
    kl_estimator: Literal["k1", "k3"] = "k1"
    whiten_advantages: bool = True
    normalize_rewards: bool = Field(False, description="Running normalisation of scores.")
    reward_clip: float | None = Field(10.0, gt=0)
    missing_eos_penalty: float | None = Field(None, description="Subtract from the score if no EOS.")
    length_penalty: float = Field(0.0, ge=0, description="Subtracted per generated token.")
    value_model: Literal["separate", "head"] = "separate"


class PlaceholderMethod(StrictModel):
    """Methods we name but do not yet run: accepted by the schema, refused at submission."""

    type: Literal["orpo", "kto", "grpo"]
    beta: float | None = None


Method = Annotated[
    SupervisedMethod | RewardModelMethod | DpoMethod | PpoMethod | PlaceholderMethod,
    Field(discriminator="type"),
]


class OutputSpec(StrictModel):
    merge_adapters: bool = Field(False, description="Also save the base with LoRA adapters merged in.")


# Method presets (the seed's appendix tables): what "auto" means for each method.
PRESETS: dict[str, dict[str, Any]] = {
    "supervised": {"learning_rate": 2e-4, "epochs": 3.0, "batch_size": 8},
    "reward_model": {"learning_rate": 1e-4, "epochs": 1.0, "batch_size": 8},
    "dpo": {"learning_rate": 5e-6, "epochs": 1.0, "batch_size": 8},
    "ppo": {"learning_rate": 1e-5, "epochs": 1.0, "batch_size": 8},
    "orpo": {"learning_rate": 8e-6, "epochs": 1.0, "batch_size": 8},
    "kto": {"learning_rate": 5e-6, "epochs": 1.0, "batch_size": 8},
    "grpo": {"learning_rate": 1e-6, "epochs": 1.0, "batch_size": 8},
}
# Full fine-tuning of all weights wants a smaller rate than LoRA's presets above.
FULL_FINETUNE_LR_SCALE = 0.1


class JobSpec(StrictModel):
    """Everything a stage needs to run, complete after validation."""

    method: Method
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    distribution: DistributionSpec = Field(default_factory=DistributionSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @field_validator("method", mode="before")
    @classmethod
    def _method_from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_presets(self) -> JobSpec:
        preset = PRESETS[self.method.type]
        if self.training.learning_rate is None:
            lr = preset["learning_rate"]
            if self.model.lora is None and self.method.type in ("supervised", "reward_model"):
                lr *= FULL_FINETUNE_LR_SCALE
            self.training.learning_rate = lr
        if self.training.epochs is None:
            self.training.epochs = preset["epochs"]
        if self.training.batch_size is None:
            self.training.batch_size = preset["batch_size"]
        return self

    @property
    def method_type(self) -> str:
        return self.method.type


def load_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a spec from plain data (YAML, JSON); raises pydantic.ValidationError."""
    return JobSpec.model_validate(data)


def describe_validation_error(error: Exception) -> tuple[str, str | None]:
    """A one-line message and the dotted field path of the first problem in a ValidationError."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error), None
    first = errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ()))
    message = first.get("msg", str(error))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return (f"{location}: {message}" if location else message), (location or None)

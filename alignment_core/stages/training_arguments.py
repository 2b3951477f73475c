"""Build a TRL trainer config (a TrainingArguments subclass) from the spec's training section.

One place decides precision, checkpoint layout, evaluation / save cadence, early stopping and
DeepSpeed, so the three TRL-backed stages train the same way.
"""

from __future__ import annotations

import importlib
from typing import Any

from alignment_core.context import StageContext
from alignment_core.specs import JobSpec
from alignment_core.stages.deepspeed_config import deepspeed_config, trainer_overrides
from alignment_core.stages.deepspeed_ops import check_deepspeed_op_builds

NEVER = 10**9  # a step interval that never fires; the trainer still saves at the last step


class TrainingSpecError(ValueError):
    """A combination of training settings that cannot work; names the fields."""


def mixed_precision(spec: JobSpec, device: Any) -> str | None:
    """'bf16' / 'fp16' when the model trains in that dtype on a GPU, else None (fp32 on CPU)."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    dtype = spec.model.dtype
    if dtype == "float16":
        return "fp16"
    if dtype in ("bfloat16", "auto"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else None
    return None


def performance_overrides(spec: JobSpec, device: Any) -> dict[str, Any]:
    """Speed settings from the optional stages.performance module (GPU tuning), if present."""
    try:
        module = importlib.import_module("alignment_core.stages.performance")
    except ModuleNotFoundError:
        return {}
    function = getattr(module, "training_overrides", None)
    return dict(function(spec, device)) if callable(function) else {}


def trainer_config(config_class: type, spec: JobSpec, context: StageContext, device: Any,
                   has_eval: bool, **method_arguments: Any):
    """The config for one stage; `method_arguments` are the method's own fields (beta, max_length...)."""
    training = spec.training
    if training.early_stopping_patience is not None and (not has_eval or training.eval_steps is None):
        raise TrainingSpecError("training.early_stopping_patience needs eval data (data.eval_files or "
                                "data.eval_split) and training.eval_steps")
    if training.load_best_model_at_end and (not has_eval or training.eval_steps is None):
        raise TrainingSpecError("training.load_best_model_at_end needs eval data and training.eval_steps")
    evaluate_during = has_eval and training.eval_steps is not None
    save_steps = training.save_steps
    if training.load_best_model_at_end or training.early_stopping_patience is not None:
        save_steps = save_steps or training.eval_steps  # best-model tracking needs saves on eval steps
    precision = mixed_precision(spec, device)
    arguments: dict[str, Any] = {
        "output_dir": str(context.checkpoints_root),
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "per_device_train_batch_size": training.batch_size,
        "per_device_eval_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "warmup_steps": training.warmup_ratio,  # a float below 1 is a share of the total steps
        "lr_scheduler_type": training.lr_scheduler,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_steps": training.logging_steps,
        # The trainer hides NaN / inf losses from its logs by default; we want divergence to fail the job.
        "logging_nan_inf_filter": False,
        "eval_strategy": "steps" if evaluate_during else "no",
        "eval_steps": training.eval_steps if evaluate_during else None,
        "save_strategy": "steps",
        "save_steps": save_steps or NEVER,
        "save_total_limit": training.save_total_limit,
        "load_best_model_at_end": training.load_best_model_at_end or training.early_stopping_patience is not None,
        "metric_for_best_model": training.metric_for_best_model,
        "report_to": "none",
        "disable_tqdm": True,
        # TRL turns gradient checkpointing on by default; the spec decides (transformers 5 names it
        # activation_checkpointing, and the old name then follows the new one).
        "activation_checkpointing": spec.model.gradient_checkpointing,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": getattr(device, "type", str(device)) == "cpu",
        "dataloader_num_workers": 0,
        "deepspeed": deepspeed_config(spec.distribution, precision, trained_parameters(spec)),
    }
    if spec.model.gradient_checkpointing:
        arguments["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    arguments.update(method_arguments)
    arguments.update(performance_overrides(spec, device))
    # Last: DeepSpeed's torch_autocast does the bf16 autocast, and the trainer's bf16 flag must not undo it.
    arguments.update(trainer_overrides(arguments["deepspeed"]))
    if arguments["deepspeed"] is not None:
        # The config initialises DeepSpeed, which compiles its CPU op and would wait forever on a killed build's lock.
        check_deepspeed_op_builds()
    return config_class(**_for_installed_transformers(config_class, arguments))


def trained_parameters(spec: JobSpec) -> int | None:
    """Parameters that get gradients (all, or the adapters), read from the model's config; None without
    DeepSpeed (nothing needs it) or when the config cannot be read."""
    if spec.distribution.zero_stage == 0:
        return None
    from alignment_core.planning.model_shape import ModelConfigUnavailable, read_model_shape

    kind = "sequence_scorer" if spec.method_type == "reward_model" else "causal_lm"
    try:
        shape = read_model_shape(spec.model.name_or_path, kind)
    except ModelConfigUnavailable:
        return None
    lora = spec.model.lora
    return shape.lora_params(lora.r, lora.target_modules) if lora is not None else shape.total_params


def _for_installed_transformers(config_class: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """Older transformers 5 releases (seen: 5.17) know checkpointing only by its old name."""
    import dataclasses

    if "activation_checkpointing" in {field.name for field in dataclasses.fields(config_class)}:
        return arguments
    renamed = dict(arguments)
    for new, old in (("activation_checkpointing", "gradient_checkpointing"),
                     ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")):
        if new in renamed:
            renamed.setdefault(old, renamed[new])
            del renamed[new]
    return renamed


def early_stopping_callbacks(spec: JobSpec) -> list:
    """EarlyStoppingCallback when the spec asks for early stopping."""
    if spec.training.early_stopping_patience is None:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=spec.training.early_stopping_patience)]

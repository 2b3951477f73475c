"""A TrainerCallback that connects a Hugging Face / TRL trainer to the stage context.

Logs become ``context.report``; each saved checkpoint is marked complete through
``context.checkpoint_saved``; when the context asks to stop, the trainer saves a checkpoint at the
current step and ends, and the stage reports 'paused' or 'cancelled'.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alignment_core.context import CHECKPOINT_PREFIX, StageContext, StopReason

# Trainer log keys that are bookkeeping, not metrics.
_SKIPPED_KEYS = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def numeric_metrics(logs: dict) -> dict[str, float]:
    """The finite numbers of a trainer log, with 'learning_rate' kept under its own name."""
    metrics = {}
    for key, value in logs.items():
        if key in _SKIPPED_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            metrics[key] = float(value)
    return metrics


class NonFiniteLoss(FloatingPointError):
    """Training diverged: continuing would only write NaN weights, so the stage fails instead."""


def raise_if_diverged(logs: dict, step: int) -> None:
    for key in ("loss", "eval_loss"):
        value = logs.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(float(value)):
            raise NonFiniteLoss(
                f"{key} became {value} at step {step}; lower training.learning_rate, enable "
                "training.max_grad_norm clipping or check the data for empty responses"
            )


class ContextCallback(TrainerCallback):
    """Reports metrics, marks checkpoints complete and stops the trainer when the context says so."""

    def __init__(self, context: StageContext):
        self.context = context
        self.stop_reason: StopReason | None = None
        self.last_train_metrics: dict[str, float] = {}
        self.last_eval_metrics: dict[str, float] = {}
        self.trained_tokens = 0
        # TRL's trainers count trained tokens in an attribute the checkpoint does not hold; the stage points
        # this at the trainer so each checkpoint carries the count and a resumed run continues it.
        self.trainer: Any = None

    def _check_stop(self, state, control) -> None:
        if self.stop_reason is not None or state.global_step >= state.max_steps:
            return
        reason = self.context.should_stop()
        if reason is not None:
            self.stop_reason = reason
            control.should_save = True  # keep the work done so far; resume starts here
            control.should_training_stop = True

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.max_steps > 0:
            self.context.plan_steps(int(state.max_steps))
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self._check_stop(state, control)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        raise_if_diverged(logs or {}, state.global_step)
        metrics = numeric_metrics(logs or {})
        if not metrics:
            return control
        if "num_tokens" in metrics and not any(key.startswith("eval_") for key in metrics):
            self.trained_tokens = int(metrics["num_tokens"])
        if any(key.startswith("eval_") for key in metrics):
            self.last_eval_metrics.update(metrics)
        elif "loss" in metrics:
            self.last_train_metrics = metrics
        if state.is_world_process_zero:
            self.context.report(state.global_step, metrics)
        self._check_stop(state, control)
        return control

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if state.is_world_process_zero and path.is_dir():
            save_token_count(self.trainer, path)  # before the checkpoint is marked complete
            self.context.checkpoint_saved(state.global_step, path, dict(self.last_train_metrics))
        return control


TOKEN_COUNT_FILE = "alignd_trained_tokens.json"


def save_token_count(trainer: Any, checkpoint: Path) -> None:
    """Write the trainer's running token count beside its checkpoint (TRL keeps it out of trainer_state)."""
    count = getattr(trainer, "_total_train_tokens", None)
    if count is not None:
        (checkpoint / TOKEN_COUNT_FILE).write_text(json.dumps({"num_tokens": int(count)}))


def restore_token_count(trainer: Any, checkpoint: Path) -> None:
    """Continue the token count from `checkpoint`, so a resumed job reports the tokens of all its attempts."""
    saved = checkpoint / TOKEN_COUNT_FILE
    if saved.is_file() and hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = int(json.loads(saved.read_text())["num_tokens"])

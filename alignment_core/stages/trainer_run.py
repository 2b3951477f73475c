"""The part every TRL-backed stage shares after building its trainer: resume, train, stop or finish.

Finishing means: evaluate on the held-out data, save the final model (adapter, and merged weights if
the spec asks) under ``context.output_dir / "model"``, and describe it all in a StageResult.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignment_core.context import StageContext
from alignment_core.specs import JobSpec
from alignment_core.stages import StageResult
from alignment_core.stages.performance import keep_adapter_inputs_in_compute_dtype
from alignment_core.stages.trainer_bridge import ContextCallback, numeric_metrics, restore_token_count

FINAL_MODEL_FOLDER = "model"


def train_and_finish(trainer: Any, bridge: ContextCallback, spec: JobSpec, context: StageContext,
                     tokenizer: Any, has_eval: bool) -> StageResult:
    """Run `trainer` (resuming from the context's newest checkpoint) and turn the outcome into a StageResult."""
    from transformers.trainer_callback import PrinterCallback

    # The context already receives every logged row (metrics.jsonl, the job's metrics); the trainer's own
    # print of the same dicts would only interleave with the progress bar and the worker logs.
    trainer.remove_callback(PrinterCallback)
    keep_adapter_inputs_in_compute_dtype(trainer.model, bool(getattr(trainer.args, "bf16", False)))
    bridge.trainer = trainer
    resume = context.resume_from()
    if resume is not None:
        _report_logged_history(context, resume)
        restore_token_count(trainer, resume)
    if resume is not None and _finished_at(resume, int(getattr(trainer.args, "max_steps", -1))):
        # The trainer would take one more step from a checkpoint at its last step (a crash between the
        # final checkpoint and recording the outcome); load that state and go straight to finishing.
        from transformers.trainer_callback import TrainerState

        trainer._load_from_checkpoint(str(resume))
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    steps = int(trainer.state.global_step)
    trained_tokens = bridge.trained_tokens or int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    if bridge.stop_reason is not None:
        status = "paused" if bridge.stop_reason == "pause" else "cancelled"
        return StageResult(status=status, model_dir=None, steps=steps, trained_tokens=trained_tokens,
                           metrics=bridge.last_train_metrics)
    eval_metrics = numeric_metrics(trainer.evaluate()) if has_eval else {}
    model_dir = None
    if context.rank == 0:
        from alignment_core.modeling.saving import save_model

        model_dir = Path(save_model(trainer.model, tokenizer, Path(context.output_dir) / FINAL_MODEL_FOLDER,
                                    merge_adapters=spec.output.merge_adapters))
    return StageResult(status="completed", model_dir=model_dir, steps=steps, trained_tokens=trained_tokens,
                       metrics=bridge.last_train_metrics, eval_metrics=eval_metrics)


def _finished_at(checkpoint: Path, max_steps: int) -> bool:
    """Whether the checkpoint was written at the run's last optimizer step: the checkpoint's own last step, and
    also `max_steps` when this run sets one (a larger --max-steps extends a finished run instead of stopping)."""
    state_file = Path(checkpoint) / "trainer_state.json"
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    step = state.get("global_step", 0)
    return state.get("max_steps", 0) > 0 and step >= state["max_steps"] and (max_steps <= 0 or step >= max_steps)


def _report_logged_history(context: StageContext, checkpoint: Path) -> None:
    """Report again what the checkpoint's run logged: a crashed attempt may have logged steps that never
    reached the runner. Reports are idempotent per step, so steps already recorded change nothing."""
    state_file = Path(checkpoint) / "trainer_state.json"
    if not state_file.exists():
        return
    for entry in json.loads(state_file.read_text()).get("log_history", []):
        step = entry.get("step")
        metrics = {key: value for key, value in numeric_metrics(entry).items() if key != "step"}
        if isinstance(step, int) and metrics:
            context.report(step, metrics)

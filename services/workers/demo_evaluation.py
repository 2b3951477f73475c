"""Held-out demo-task numbers before and after a stage, for jobs the demo submits.

Runs in the train worker of rank 0 right after the stage, where torch and the data are already
loaded; other jobs skip it. The numbers come from alignment_core's demo evaluation.
"""

from __future__ import annotations

from typing import Any

from alignment_core.specs import JobSpec

DEMO_METADATA_KEY = "alignd_demo"
HELD_OUT_LIMIT = 100  # enough for a stable share on the demo task, a few seconds per model on CPU


def is_demo_job(metadata: dict[str, Any] | None) -> bool:
    return bool(metadata) and str(metadata.get(DEMO_METADATA_KEY, "")).lower() in ("1", "true", "yes")


def demo_before_after(spec: JobSpec, start_model: str, model_dir: str) -> dict[str, dict[str, float]]:
    """{'before': metrics of the starting model, 'after': metrics of the trained one}."""
    from alignment_core.evaluation.demo_report import demo_metrics
    from alignment_core.modeling.tiny import resolve_model_path

    start = resolve_model_path(start_model)
    reference = start if spec.method.type in ("dpo", "ppo") else None
    # For a reward model, 'before' is a fresh one-logit head on the starting model.
    before = demo_metrics(spec, start, limit=HELD_OUT_LIMIT)
    after = demo_metrics(spec, model_dir, reference_path=reference, limit=HELD_OUT_LIMIT)
    return {"before": before, "after": after}

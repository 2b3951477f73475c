"""Held-out demo-task numbers for a stage's input and output model (the local runner's before / after).

SFT and DPO: share of greedy answers that satisfy the sorting rule; DPO also the preference win-rate of
the trained policy over its starting model; reward model: pairwise accuracy. All on the demo's
held-out problems, which never appear in training files.
"""

from __future__ import annotations

from typing import Any

from alignment_core.data.demo_sources import DEMO_SCHEME, resolve_data_path
from alignment_core.data.formats import read_jsonl
from alignment_core.specs import JobSpec, ModelSpec

HELD_OUT = DEMO_SCHEME + "eval"


def uses_demo_data(spec: JobSpec) -> bool:
    """True when the spec trains or evaluates on the built-in demo task's data.

    Evaluating counts: DPO on a policy's own mistakes (demo.on_policy) trains on a file of its own."""
    return any(path.startswith(DEMO_SCHEME) for path in [*spec.data.train_files, *spec.data.eval_files])


def held_out_rows(limit: int) -> list[dict[str, Any]]:
    return read_jsonl(resolve_data_path(HELD_OUT))[:limit]


def demo_metrics(spec: JobSpec, model_path: str, reference_path: str | None = None,
                 limit: int = 200) -> dict[str, float]:
    """The demo-task metrics of the model at `model_path` for the spec's method."""
    from alignment_core.modeling.loading import load_causal_lm, load_sequence_scorer, load_tokenizer

    rows = held_out_rows(limit)
    tokenizer = load_tokenizer(model_path)
    model_spec = ModelSpec(name_or_path=model_path)
    if spec.method.type == "reward_model":
        from alignment_core.evaluation.reward import pairwise_accuracy

        scorer = load_sequence_scorer(model_spec, "cpu", trainable=False)
        return {"pairwise_accuracy": pairwise_accuracy(scorer, tokenizer, rows)}
    from alignment_core.evaluation.demo_task import rule_satisfaction

    policy = load_causal_lm(model_spec, "cpu", trainable=False)
    metrics = {"rule_satisfaction": rule_satisfaction(policy, tokenizer, [row["prompt"] for row in rows])}
    if reference_path is not None:
        from alignment_core.evaluation.preference import preference_win_rate

        reference = load_causal_lm(ModelSpec(name_or_path=reference_path), "cpu", trainable=False)
        metrics["win_rate"] = preference_win_rate(policy, reference, tokenizer, rows)
        metrics["win_rate_normalized"] = preference_win_rate(policy, reference, tokenizer, rows, normalize=True)
    return metrics

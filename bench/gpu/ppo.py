"""PPO with LoRA on the 1B shape: prompt 128 + response 128 tokens, 64 samples per update (8 x 8).

alignd's PPO stage runs with the reward model in-process (a 1B sequence scorer, also the value model's
start). The model's vocabulary matches the benchmark tokenizer here, so every sampled token decodes to
text the reward model reads back (a 32000-word head would sample ids the small tokenizer cannot print).
The figure is samples per second over a whole update: rollout, scoring, reference / value passes, update.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.gpu.measure import StepClock, peak_memory_gib, synchronize

FULL = {"prompt": 128, "response": 128, "samples": 64, "micro": 8}
TINY = {"prompt": 16, "response": 16, "samples": 8, "micro": 4}


def ppo_spec(ctx: dict, updates: int):
    from alignment_core.specs import JobSpec

    size = TINY if ctx["tiny"] else FULL
    PROMPT, RESPONSE, SAMPLES, MICRO = size["prompt"], size["response"], size["samples"], size["micro"]  # noqa: N806
    return JobSpec.model_validate({
        "method": {"type": "ppo", "reward": {"type": "model", "model": ctx["model_dir"], "batch_size": 16},
                   "max_new_tokens": RESPONSE, "rollout_batch_size": SAMPLES, "mini_batch_size": MICRO,
                   "ppo_epochs": 4},
        "model": {"name_or_path": ctx["model_dir"],
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}},
        "data": {"train_files": [ctx["data"]["prompts"]], "max_prompt_length": PROMPT,
                 "max_length": PROMPT + RESPONSE},
        "training": {"batch_size": MICRO, "max_steps": updates, "logging_steps": 1, "seed": 0},
        "distribution": {"gpus_per_worker": 1 if ctx["device"] == "cuda" else 0},
    })


def run_stage(ctx: dict) -> dict:
    from alignment_core.context import LocalContext
    from alignment_core.stages import run_stage as run_alignd_stage

    warmup, steps = 1, max(3, ctx["steps"] // 3)
    spec = ppo_spec(ctx, warmup + steps)
    clock = StepClock(warmup)
    reports: list[dict] = []
    context = LocalContext(output_dir=Path(ctx["work"]) / "ppo-stage", resume=False)

    def on_report(step: int, metrics: dict) -> None:
        clock.mark()
        reports.append({key: float(value) for key, value in metrics.items()})

    context.on_report.append(on_report)
    synchronize()
    clock.marks.append(time.perf_counter())
    result = run_alignd_stage(spec, context)
    update = clock.median()
    samples = (TINY if ctx["tiny"] else FULL)["samples"]
    summary = {"steps_timed": len(clock.step_times), "step_s": update,
               "step_times": [round(t, 4) for t in clock.step_times],
               "samples_s": samples / update if update else None, "stage_status": result.status,
               "response_length": [r.get("response_length") for r in reports],
               "reports": json.loads(json.dumps(reports[-1:], default=str))}
    summary.update(peak_memory_gib())
    return summary


def run(impl: str, ctx: dict) -> dict:
    if impl == "stage":
        return run_stage(ctx)
    raise KeyError(f"PPO implementation {impl!r} is not available in this environment")

"""SFT / reward-model / DPO cases on TRL trainers: TRL's defaults (the baseline) and alignd's speed settings.

Both variants train the same random-weight model on the same rows in the same order; only the settings
of alignment_core.stages.performance differ, so their first losses must agree to bf16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gpu.measure import (
    StepClock,
    flops_per_token,
    peak_memory_gib,
    profiled,
    reset_peak_memory,
    summarize,
    trainer_callback,
)


@dataclass(frozen=True)
class Case:
    name: str
    method: str  # supervised | reward_model | dpo
    lora: bool
    batch: int
    seq: int  # tokens per sequence (per side for preference pairs)
    accumulation: int = 1  # micro-batches per optimizer step (the stage variants only)


def case_spec(case: Case, ctx: dict, max_steps: int):
    """The JobSpec alignd would run for this case; the speed settings are derived from it."""
    from alignment_core.specs import JobSpec

    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"} if case.lora else None
    model = {"name_or_path": ctx["model_dir"], "lora": lora, **ctx.get("stage_model", {})}
    data_file = ctx["data"]["sft"] if case.method == "supervised" else ctx["data"]["pref"]
    prompt_max = min(256, case.seq // 2)
    return JobSpec.model_validate(
        {
            "method": case.method,
            "model": model,
            "data": {"train_files": [data_file], "max_length": case.seq, "max_prompt_length": prompt_max},
            "training": {
                "batch_size": case.batch,
                "gradient_accumulation_steps": case.accumulation,
                "max_steps": max_steps,
                "logging_steps": 1,
                "seed": 0,
            },
            "distribution": {"gpus_per_worker": 1 if ctx["device"] == "cuda" else 0},
        }
    )


def _config(case: Case, impl: str, ctx: dict, max_steps: int) -> Any:
    from trl import DPOConfig, RewardConfig, SFTConfig

    from alignment_core.stages.performance import model_load_overrides, training_overrides

    common: dict[str, Any] = dict(
        output_dir=str(Path(ctx["work"]) / f"{case.name}-{impl}"),
        per_device_train_batch_size=case.batch,
        gradient_accumulation_steps=case.accumulation,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        max_length=case.seq,
        dataset_num_proc=None,
    )
    if ctx["device"] == "cpu":
        common.update(bf16=False, use_cpu=True)
    if impl in ("alignd", "alignd_compile"):
        spec = case_spec(case, ctx, max_steps)
        common.update(training_overrides(spec, ctx["device"]))
        load = model_load_overrides(spec, ctx["device"])
        common["model_init_kwargs"] = {
            "dtype": str(load["dtype"]).removeprefix("torch."),
            "attn_implementation": load["attn_implementation"],
        }
        if impl == "alignd_compile":
            common["torch_compile"] = True
    if case.method == "supervised":
        return SFTConfig(**common)
    if case.method == "dpo":
        return DPOConfig(**common)
    return RewardConfig(**common)


def _lora_config(case: Case, task_type: str):
    from peft import LoraConfig

    if not case.lora:
        return None
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type=task_type)


def _tokens_per_step(trainer: Any, case: Case) -> int:
    """Mean tokens a step feeds the model (both sides of a pair), from the prepared dataset."""
    dataset = trainer.train_dataset
    rows = dataset.select(range(min(len(dataset), 64)))
    if case.method == "supervised":
        lengths = [min(len(ids), case.seq) for ids in rows["input_ids"]]
    elif case.method == "dpo":
        lengths = [
            min(len(p) + len(c), case.seq) + min(len(p) + len(r), case.seq)
            for p, c, r in zip(rows["prompt_ids"], rows["chosen_ids"], rows["rejected_ids"])
        ]
    else:
        lengths = [
            min(len(c), case.seq) + min(len(r), case.seq) for c, r in zip(rows["chosen_ids"], rows["rejected_ids"])
        ]
    return round(case.batch * case.accumulation * sum(lengths) / len(lengths))


def run_trl(case: Case, impl: str, ctx: dict) -> dict:
    """Train `warmup + steps` steps with TRL's trainer for `case`; impl is 'trl' (defaults) or 'alignd'."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOTrainer, RewardTrainer, SFTTrainer

    warmup, steps = ctx["warmup"], ctx["steps"]
    max_steps = warmup + steps + 1
    config = _config(case, impl, ctx, max_steps)
    tokenizer = AutoTokenizer.from_pretrained(ctx["model_dir"])
    data_file = ctx["data"]["sft"] if case.method == "supervised" else ctx["data"]["pref"]
    dataset = load_dataset("json", data_files=data_file, split="train")
    clock = StepClock(warmup)
    trainer_cls = {"supervised": SFTTrainer, "dpo": DPOTrainer, "reward_model": RewardTrainer}[case.method]
    task = "SEQ_CLS" if case.method == "reward_model" else "CAUSAL_LM"
    trainer = trainer_cls(
        model=ctx["model_dir"],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora_config(case, task),
        callbacks=[trainer_callback(clock)],
    )
    tokens = _tokens_per_step(trainer, case)
    trainer.train()
    shape = ctx["shape"]
    seq = tokens / case.batch / case.accumulation / (2 if case.method != "supervised" else 1)
    full = not case.lora
    flops = flops_per_token(ctx["params"], full, shape["layers"], shape["hidden"], round(seq))
    # DPO's reference forward (2N per token) is work the step does too, unless it was precomputed.
    dense = (6 if full else 4) * ctx["params"]
    if case.method == "dpo" and not getattr(config, "precompute_ref_log_probs", False):
        flops += 2 * ctx["params"]
        dense += 2 * ctx["params"]
    result = summarize(clock, tokens, flops, dense)
    result.update(tokens_per_step=tokens, settings=_settings(config))
    return result


def _settings(config: Any) -> dict:
    keys = (
        "bf16",
        "gradient_checkpointing",
        "use_liger_kernel",
        "optim",
        "padding_free",
        "precompute_ref_log_probs",
        "model_init_kwargs",
    )
    return {key: str(getattr(config, key, None)) for key in keys}


def run_stage(case: Case, ctx: dict) -> dict:
    """alignd's own stage (alignment_core.stages.<method>.run) on the same data, timed between its reports."""
    import json
    import time

    from alignment_core.context import LocalContext
    from alignment_core.stages import run_stage as run_alignd_stage
    from bench.gpu.measure import synchronize

    warmup, steps = ctx["warmup"], ctx["steps"]
    spec = case_spec(case, ctx, warmup + steps + 1)
    clock = StepClock(warmup)
    context = LocalContext(output_dir=Path(ctx["work"]) / f"{case.name}-stage", resume=False)
    train_peak: dict = {}

    def on_report(step: int, metrics: dict) -> None:
        clock.mark()
        clock.losses.append(float(metrics.get("loss", 0)))
        if step == 1:
            # Past the load (a quantized load peaks above training) and the first step's optimizer states.
            train_peak.update(peak_memory_gib(prefix="load_and_first_step_"))
            reset_peak_memory()

    context.on_report.append(on_report)
    synchronize()
    started = time.perf_counter()
    clock.marks.append(started)
    with profiled(ctx):
        result = run_alignd_stage(spec, context)
    # Every benchmark row is longer than max_length, so each sequence is cut to it.
    tokens = case.batch * case.accumulation * case.seq * (1 if case.method == "supervised" else 2)
    shape = ctx["shape"]
    full = not case.lora
    flops = flops_per_token(ctx["params"], full, shape["layers"], shape["hidden"], case.seq)
    dense = (6 if full else 4) * ctx["params"]
    from alignment_core.stages.performance import precompute_reference

    if case.method == "dpo" and not precompute_reference(spec):
        flops += 2 * ctx["params"]
        dense += 2 * ctx["params"]
    summary = summarize(clock, tokens, flops, dense)
    summary.update(train_peak)
    summary.update(
        tokens_per_step=tokens,
        stage_trained_tokens=result.trained_tokens,
        stage_steps=result.steps,
        stage_status=result.status,
        stage_metrics=json.loads(json.dumps(result.metrics, default=str)),
    )
    return summary

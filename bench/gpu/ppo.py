"""PPO with LoRA on the 1B shape: prompt 128 + response 128 tokens, 64 samples per update (8 x 8).

Implementations, all on the same random-weight model and prompts:
  trl112        TRL 1.12's experimental PPOTrainer with its defaults (policy / reference / value / reward
                loaded as a user would, from the path; LoRA on the policy as peft_config; per-device batch 8
                x accumulation 8 = 64 samples per update, one minibatch, 4 PPO epochs, 128 new tokens).
                It runs from the wheel installed under $ALIGND_TRL112_PATH (prepended to PYTHONPATH by
                run.py), since TRL removed PPO after 1.12.
  stage         alignd's PPO stage as jobs run it (on a GPU it samples with a static KV cache, which
                transformers compiles into CUDA graphs), the reward model in-process, micro-batch 8.
  stage_m32     the same with micro-batch 32 (training.batch_size; still 64 samples and one minibatch per
                PPO epoch, so the same update): fewer, larger kernels in the reference / value passes and epochs.
  stage_serve   stage_m32 scoring through a Ray Serve application on the same GPU (what the workers
                deploy), to measure the Serve share of an update.

The model's vocabulary matches the benchmark tokenizer, so every sampled token decodes to text the
reward model reads back. The figure is samples per second over whole updates; each update's phases
(rollout, scoring, reference / value passes, PPO epochs) are timed with the device synchronised.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

from bench.gpu.measure import StepClock, peak_memory_gib, synchronize

FULL = {"prompt": 128, "response": 128, "samples": 64, "micro": 8, "epochs": 4}
TINY = {"prompt": 16, "response": 16, "samples": 8, "micro": 4, "epochs": 2}


def _size(ctx: dict) -> dict:
    return TINY if ctx["tiny"] else FULL


def ppo_spec(ctx: dict, updates: int, reward: dict | None = None, micro: int | None = None):
    """alignd's spec with TRL 1.12's defaults where they differ from ours (one minibatch per epoch, 4 epochs,
    value loss 0.1, KL 0.05, whole-rollout batches)."""
    from alignment_core.specs import JobSpec

    size = _size(ctx)
    return JobSpec.model_validate(
        {
            "method": {
                "type": "ppo",
                "reward": reward or {"type": "model", "model": ctx["model_dir"], "batch_size": 16},
                "max_new_tokens": size["response"],
                "rollout_batch_size": size["samples"],
                "mini_batch_size": size["samples"],
                "ppo_epochs": size["epochs"],
                "value_loss_coef": 0.1,
                "kl_coef": 0.05,
            },
            "model": {
                "name_or_path": ctx["model_dir"],
                "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
            },
            "data": {
                "train_files": [ctx["data"]["prompts"]],
                "max_prompt_length": size["prompt"],
                "max_length": size["prompt"] + size["response"],
            },
            "training": {"batch_size": micro or size["micro"], "max_steps": updates, "logging_steps": 1, "seed": 0},
            "distribution": {"gpus_per_worker": 1 if ctx["device"] == "cuda" else 0},
        }
    )


class PhaseTimer:
    """Wraps the PPO stage's step functions (looked up in its module) and sums each one's synchronised time."""

    PHASES = ("generate_rollout", "score_rollout", "make_experience", "ppo_update")

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.per_update: list[dict[str, float]] = []

    def install(self, module) -> None:
        for name in self.PHASES:
            setattr(module, name, self._timed(name, getattr(module, name)))

    def _timed(self, name: str, original):
        def wrapper(*args, **kwargs):
            synchronize()
            started = time.perf_counter()
            result = original(*args, **kwargs)
            synchronize()
            self.current[name] += time.perf_counter() - started
            return result

        return wrapper

    def close_update(self) -> None:
        self.per_update.append({key: round(value, 4) for key, value in self.current.items()})
        self.current = defaultdict(float)


def _serve_reward(ctx: dict) -> tuple[dict, object, object]:
    """Deploy the reward model as the workers do (same class, same GPU); returns the spec's reward section,
    the handle and a function that tears it down."""
    import ray
    from ray import serve

    from alignment_core.specs import RewardSource
    from services.workers.reward_serving import delete_reward_model, deploy_reward_model

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(include_dashboard=False, num_gpus=1 if ctx["device"] == "cuda" else 0, log_to_driver=False)
    gpus = 0.5 if ctx["device"] == "cuda" else 0
    source = RewardSource(type="serve", model=ctx["model_dir"], batch_size=16, gpus_per_replica=gpus)
    name = deploy_reward_model("bench", ctx["model_dir"], source)
    handle = serve.get_app_handle(name)

    def stop() -> None:
        delete_reward_model("bench")
        ray.shutdown()

    reward = {
        "type": "serve",
        "model": ctx["model_dir"],
        "application": name,
        "batch_size": 16,
        "gpus_per_replica": gpus,
    }
    return reward, handle, stop


def run_stage(ctx: dict, micro: int | None = None, serve: bool = False) -> dict:
    import alignment_core.stages.ppo as ppo_stage
    from alignment_core.context import LocalContext
    from alignment_core.stages import run_stage as run_alignd_stage

    warmup, steps = 1, max(2, ctx["steps"] // 3)
    reward, handle, stop = _serve_reward(ctx) if serve else (None, None, None)
    spec = ppo_spec(ctx, warmup + steps, reward, micro)
    timer = PhaseTimer()
    timer.install(ppo_stage)
    clock = StepClock(warmup)
    reports: list[dict] = []
    context = LocalContext(output_dir=Path(ctx["work"]) / f"ppo-{ctx['impl']}", resume=False)
    context.reward_handle = handle

    def on_report(step: int, metrics: dict) -> None:
        clock.mark()
        timer.close_update()
        reports.append({key: float(value) for key, value in metrics.items()})

    context.on_report.append(on_report)
    try:
        synchronize()
        clock.marks.append(time.perf_counter())
        result = run_alignd_stage(spec, context)
    finally:
        if stop:
            stop()
    return _summary(
        clock,
        timer.per_update[warmup:],
        ctx,
        {
            "stage_status": result.status,
            "response_length": [r.get("response_length") for r in reports],
            "reward_mean": [r.get("reward_mean") for r in reports],
            "last_report": reports[-1:],
        },
    )


def _summary(clock: StepClock, phases: list[dict], ctx: dict, extra: dict) -> dict:
    update = clock.median()
    samples = _size(ctx)["samples"]
    summary = {
        "steps_timed": len(clock.step_times),
        "step_s": update,
        "step_times": [round(t, 4) for t in clock.step_times],
        "samples_s": samples / update if update else None,
        "phases": phases,
    }
    if phases and update:
        mean = {key: sum(p.get(key, 0.0) for p in phases) / len(phases) for key in phases[0]}
        summary["phase_share"] = {key: round(value / update, 4) for key, value in mean.items()}
    summary.update(extra)
    summary.update(peak_memory_gib())
    return json.loads(json.dumps(summary, default=str))


def run_trl112(ctx: dict) -> dict:
    """TRL 1.12's PPOTrainer with its defaults, timed between optimizer-update ends (one per 64 samples)."""
    import torch
    import trl
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from alignment_core.data.chat import render_prompt
    from bench.gpu.measure import trainer_callback

    if not trl.__version__.startswith("1.12"):
        raise RuntimeError(f"trl {trl.__version__} is not 1.12: set ALIGND_TRL112_PATH")
    size = _size(ctx)
    warmup, steps = 1, max(2, ctx["steps"] // 3)
    updates = warmup + steps
    tokenizer = AutoTokenizer.from_pretrained(ctx["model_dir"])
    tokenizer.padding_side = "left"
    dataset = load_dataset("json", data_files=ctx["data"]["prompts"], split="train")

    def tokenize(row: dict) -> dict:
        # The same chat-rendered prompt and left truncation as alignd's stage.
        ids = tokenizer(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
        return {"input_ids": ids[-size["prompt"] :]}

    dataset = dataset.map(tokenize, remove_columns=dataset.column_names)
    cpu = ctx["device"] == "cpu"
    config = PPOConfig(
        output_dir=str(Path(ctx["work"]) / "ppo-trl112"),
        per_device_train_batch_size=size["micro"],
        gradient_accumulation_steps=size["samples"] // size["micro"],
        num_ppo_epochs=size["epochs"],
        response_length=size["response"],
        total_episodes=size["samples"] * updates,
        num_sample_generations=0,
        report_to="none",
        save_strategy="no",
        seed=0,
        logging_steps=1,
        stop_token="eos",
        **({"bf16": False, "use_cpu": True} if cpu else {}),
    )
    policy = AutoModelForCausalLM.from_pretrained(ctx["model_dir"])
    value = AutoModelForSequenceClassification.from_pretrained(ctx["model_dir"], num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(ctx["model_dir"], num_labels=1)
    for model in (value, reward):
        model.config.pad_token_id = tokenizer.pad_token_id
    clock = StepClock(warmup)
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=reward,
        train_dataset=dataset,
        value_model=value,
        callbacks=[trainer_callback(clock)],
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return _summary(
        clock,
        [],
        ctx,
        {
            "trl": trl.__version__,
            "settings": {"bf16": str(config.bf16), "gradient_checkpointing": str(config.gradient_checkpointing)},
        },
    )


def run(impl: str, ctx: dict) -> dict:
    if impl == "trl112":
        return run_trl112(ctx)
    if impl in ("stage", "stage_m32", "stage_serve"):
        micro = None if impl == "stage" else _size(ctx)["samples"] // 2
        return run_stage(ctx, micro=micro, serve=impl == "stage_serve")
    raise KeyError(f"PPO implementation {impl!r} is not known")

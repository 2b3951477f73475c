"""Data-parallel scaling of alignd's supervised stage: ZeRO-2 on N GPUs against one GPU.

    torchrun --nproc_per_node=2 -m bench.gpu.zero2 --model DIR --data FILE --zero 2 --result OUT.json
    bench/gpu/zero2_suite.sh          # every variant below in one device call (1 GPU plain, ZeRO-2 on 1 and 2)

Each process runs the stage itself (one stage, any world size) with `distribution.zero_stage`; DeepSpeed
reads RANK / WORLD_SIZE / MASTER_ADDR from torchrun, as it does inside a Ray Train worker. Rank 0 times
the steps (median after warm-up) and writes tokens/s for the whole group. Full fine-tuning of the 1.1B
shape, 8 x 1024 tokens per GPU per step.

`--ds JSON` merges settings into the DeepSpeed config the stage builds (bucket sizes, the torch_autocast
section...), to measure a tuning before it goes into alignment_core/stages/deepspeed_config.py.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.gpu.measure import PEAK_FLOPS, StepClock, flops_per_token, peak_memory_gib, synchronize


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, nested dicts key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def override_deepspeed(extra: dict[str, Any]) -> None:
    """Make the stage's DeepSpeed config carry `extra` (the stage reads it through training_arguments)."""
    import alignment_core.stages.training_arguments as training_arguments

    built = training_arguments.deepspeed_config

    def with_extra(distribution, mixed_precision):
        config = built(distribution, mixed_precision)
        return None if config is None else merged(config, extra)

    training_arguments.deepspeed_config = with_extra


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--work", default="/tmp/alignd-zero2")
    parser.add_argument("--result", required=True)
    parser.add_argument("--ds", default="", help="JSON merged into the stage's DeepSpeed config")
    parser.add_argument("--label", default="", help="name of the variant in the results")
    options = parser.parse_args()

    import torch

    from alignment_core.context import LocalContext
    from alignment_core.specs import JobSpec
    from alignment_core.stages import run_stage

    if not torch.cuda.is_available():
        # CPU trial runs: DeepSpeed would build its shared-memory all-reduce (C++, minutes); gloo does.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}
    extra = json.loads(options.ds) if options.ds else {}
    if extra:
        override_deepspeed(extra)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    gpus = 1 if torch.cuda.is_available() else 0
    spec = JobSpec.model_validate(
        {
            "method": "supervised",
            "model": {"name_or_path": options.model},
            "data": {
                "train_files": [options.data],
                "max_length": options.seq,
                "max_prompt_length": min(256, options.seq // 2),
            },
            "training": {
                "batch_size": options.batch,
                "max_steps": options.warmup + options.steps + 1,
                "logging_steps": 1,
                "seed": 0,
                "learning_rate": 2e-5,
            },
            "distribution": {"num_workers": world, "gpus_per_worker": gpus, "zero_stage": options.zero},
        }
    )
    clock = StepClock(options.warmup)
    name = f"zero{options.zero}-world{world}" + (f"-{options.label}" if options.label else "")
    context = LocalContext(output_dir=Path(options.work) / name, resume=False, rank=rank, world_size=world)

    def on_report(step: int, metrics: dict) -> None:
        if "loss" in metrics:  # training steps only, not the closing summary report
            clock.mark()
            clock.losses.append(float(metrics["loss"]))

    context.on_report.append(on_report)
    synchronize()
    clock.marks.append(time.perf_counter())
    result = run_stage(spec, context)
    if rank != 0:
        return
    step = clock.median()
    info = json.loads((Path(options.model) / "bench_model.json").read_text())
    params = info["params"]
    config = json.loads((Path(options.model) / "config.json").read_text())
    tokens = options.batch * options.seq * world
    flops = flops_per_token(params, True, config["num_hidden_layers"], config["hidden_size"], options.seq)
    summary = {
        "case": "zero_scaling",
        "impl": name,
        "world_size": world,
        "zero_stage": options.zero,
        "deepspeed_extra": extra,
        "step_s": step,
        "step_times": [round(t, 5) for t in clock.step_times],
        "losses": clock.losses[:20],
        "tokens_per_step": tokens,
        "tokens_s": tokens / step if step else None,
        "mfu": tokens / step * flops / PEAK_FLOPS / world if step else None,
        "stage_status": result.status,
        **peak_memory_gib(),
    }
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
    Path(options.result).write_text(json.dumps(summary))
    print(json.dumps({k: summary[k] for k in ("impl", "step_s", "tokens_s", "mfu", "peak_allocated_gib")}))


if __name__ == "__main__":
    main()

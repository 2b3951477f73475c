"""Data-parallel scaling of alignd's supervised stage: ZeRO-2 on N GPUs against one GPU.

    torchrun --nproc_per_node=2 -m bench.gpu.zero2 --model DIR --data FILE --zero 2 --result OUT.json

Each process runs the stage itself (one stage, any world size) with `distribution.zero_stage`; DeepSpeed
reads RANK / WORLD_SIZE / MASTER_ADDR from torchrun, as it does inside a Ray Train worker. Rank 0 times
the steps (median after warm-up) and writes tokens/s for the whole group. Full fine-tuning of the 1.1B
shape, 8 x 1024 tokens per GPU per step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.gpu.measure import PEAK_FLOPS, StepClock, flops_per_token, peak_memory_gib, synchronize


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
    options = parser.parse_args()

    import torch

    from alignment_core.context import LocalContext
    from alignment_core.specs import JobSpec
    from alignment_core.stages import run_stage

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
    name = f"zero{options.zero}-world{world}"
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
        "step_s": step,
        "step_times": [round(t, 5) for t in clock.step_times],
        "losses": clock.losses[:20],
        "tokens_per_step": tokens,
        "tokens_s": tokens / step if step else None,
        "mfu": tokens / step * flops / PEAK_FLOPS / world if step else None,
        "stage_status": result.status,
        **peak_memory_gib(),
    }
    Path(options.result).write_text(json.dumps(summary))
    print(json.dumps({k: summary[k] for k in ("impl", "step_s", "tokens_s", "mfu", "peak_allocated_gib")}))


if __name__ == "__main__":
    main()

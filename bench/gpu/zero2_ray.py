"""ZeRO-2 scaling through Ray Train: bench.gpu.zero2's run inside TorchTrainer workers, as alignd's workers run
stages (services/workers/launcher.py: one TorchTrainer.fit per attempt, one worker per GPU).

    python -m bench.gpu.zero2_ray --workers 2 -- --model DIR --data FILE --zero 2 --batch 16 --result OUT.json

Everything after `--` goes to bench.gpu.zero2 unchanged; rank 0 writes the result. Ray starts a local cluster
(no dashboard) with the GPUs CUDA_VISIBLE_DEVICES shows; `--cpu` runs the workers without GPUs (gloo), to try
the script on a CPU machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: the rank variables DeepSpeed and the stage read, then the benchmark's main."""
    import ray.train

    context = ray.train.get_context()
    # Ray Train sets these too; setting them from its context keeps the run independent of that detail.
    os.environ["RANK"] = str(context.get_world_rank())
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    os.environ["WORLD_SIZE"] = str(context.get_world_size())
    os.environ["LOCAL_WORLD_SIZE"] = str(context.get_local_world_size())
    sys.argv = ["bench.gpu.zero2", *config["argv"]]
    from bench.gpu import zero2

    zero2.main()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="workers without GPUs (gloo), for a CPU trial run")
    parser.add_argument("--storage", default="/tmp/alignd-zero2-ray")
    options = parser.parse_args(own)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = not options.cpu
    ray.init(include_dashboard=False, num_cpus=options.workers * options.cpus_per_worker + 1,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}})
    resources = {"CPU": options.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"argv": passthrough},
        scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=f"zero2-ray-{int(time.time())}", storage_path=str(Path(options.storage))),
    )
    started = time.perf_counter()
    trainer.fit()
    print(f"ray train fit: {time.perf_counter() - started:.1f}s for {options.workers} workers", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()

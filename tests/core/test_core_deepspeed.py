"""DeepSpeed ZeRO-2 on CPU (gloo): the SFT stage runs a few steps with the config built from the spec.

Runs in a child process: DeepSpeed initialises torch.distributed and accelerate's process state, which
must not leak into the other tests of the session. The child gets an empty torch-extensions folder, and
the test checks that nothing was compiled into it: the config's torch optimizer needs no fused_adam /
cpu_adam, and one process needs no shared-memory all-reduce kernel (each takes ~40-50 s to build).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alignment_core.specs import DistributionSpec
from alignment_core.stages.deepspeed_config import deepspeed_config

CHILD = textwrap.dedent("""
    import json, sys
    import deepspeed.ops
    # One process has nothing to all-reduce, so DeepSpeed's shared-memory kernel (C++ compiled on first use)
    # is marked unavailable and torch.distributed's gloo all-reduce is used; this also skips probing every op.
    deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}
    from alignment_core.context import LocalContext
    from alignment_core.specs import load_spec
    from alignment_core.stages import run_stage
    spec = load_spec(json.loads(sys.argv[1]))
    result = run_stage(spec, LocalContext(sys.argv[2]))
    print("RESULT " + json.dumps(result.to_json()))
""")


def test_zero_config_from_spec():
    assert deepspeed_config(DistributionSpec(zero_stage=0), None) is None
    zero3 = deepspeed_config(DistributionSpec(zero_stage=3, offload_optimizer=True, offload_params=True), "bf16")
    assert zero3["zero_optimization"]["stage"] == 3 and zero3["bf16"]["enabled"]
    assert zero3["zero_optimization"]["offload_param"]["device"] == "cpu" and "optimizer" not in zero3
    zero2 = deepspeed_config(DistributionSpec(zero_stage=2), None)
    assert zero2["optimizer"]["params"]["torch_adam"] is True and not zero2["fp16"]["enabled"]


@pytest.mark.slow
@pytest.mark.deepspeed
def test_sft_runs_under_zero2_on_cpu(tiny_model_dir, demo_data, tmp_path):
    spec = {
        "method": "supervised",
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train_files": [str(demo_data["sft"])], "max_examples": 16, "max_length": 64,
                 "max_prompt_length": 32},
        "training": {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3},
        "distribution": {"zero_stage": 2},
    }
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29517", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch-extensions"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(tmp_path / "run")],
                               env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["status"] == "completed" and result["steps"] == 3
    metrics = [json.loads(row) for row in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in metrics if "loss" in row]
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    # DeepSpeed, not the plain Trainer, saved the checkpoint: ZeRO's partitioned optimizer states are there.
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
    built = sorted(path.name for path in (tmp_path / "torch-extensions").rglob("*.so"))
    assert built == [], f"DeepSpeed compiled ops it does not need: {built}"

"""DeepSpeed ZeRO-2 on CPU (gloo, world size 1): the same spec gives the same losses as without DeepSpeed.

The ZeRO-2 runs happen in a child process: DeepSpeed initialises torch.distributed and accelerate's process
state, which must not leak into the other tests of the session; the plain runs happen here. The child gets
an empty torch-extensions folder, and the test checks that nothing was compiled into it: the trainer's
torch optimizer needs no fused_adam / cpu_adam, and one process needs no shared-memory all-reduce kernel
(each takes ~40-50 s to build).

Two comparisons, each against the path without DeepSpeed on the same batches:
- the SFT stage itself in fp32, with weight decay (the trainer exempts norm weights and biases) and active
  gradient clipping;
- a bf16-autocast SFT trainer with the config built for 'bf16' (what a GPU gets): DeepSpeed's own bf16
  mode cast the trained weights to bf16, and small updates rounded away (docs/benchmarks.md, run F).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from alignment_core.specs import DistributionSpec, JobSpec, load_spec
from alignment_core.stages.deepspeed_config import BUCKET_ELEMENTS, bucket_elements, deepspeed_config, trainer_overrides

STEPS = 3

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import deepspeed.ops
    # One process has nothing to all-reduce, so DeepSpeed's shared-memory kernel (C++ compiled on first use)
    # is marked unavailable and torch.distributed's gloo all-reduce is used; this also skips probing every op.
    deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}
    from alignment_core.context import LocalContext
    from alignment_core.specs import load_spec
    from alignment_core.stages import run_stage
    sys.path.insert(0, sys.argv[3])
    from test_core_deepspeed import bf16_trainer_losses
    spec = load_spec(json.loads(sys.argv[1]))
    result = run_stage(spec, LocalContext(Path(sys.argv[2]) / "stage"))
    bf16 = bf16_trainer_losses(spec, Path(sys.argv[2]) / "bf16")
    print("RESULT " + json.dumps({"stage": result.to_json(), "bf16_losses": bf16}))
""")


def parity_spec(model_dir: Path, demo_data: dict[str, Path], zero_stage: int) -> dict[str, Any]:
    # Weight decay 1.0 and lr 5e-3 make the norm weights' exemption from decay visible in three steps; the
    # gradient norm (~5) is above max_grad_norm 1.0, so clipping acts in every step.
    return {
        "method": "supervised",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train_files": [str(demo_data["sft"])], "max_examples": 16, "max_length": 64, "max_prompt_length": 32},
        "training": {
            "max_steps": STEPS,
            "batch_size": 2,
            "learning_rate": 5e-3,
            "weight_decay": 1.0,
            "max_grad_norm": 1.0,
            "seed": 0,
        },
        "distribution": {"zero_stage": zero_stage},
    }


def bf16_trainer_losses(spec: JobSpec, output_dir: Path) -> list[float]:
    """Losses of a bf16-autocast SFT trainer on CPU, under DeepSpeed when the spec's zero_stage says so.

    The stage trains in fp32 on a CPU (bf16 is emulated there), so this builds the trainer the way the stage
    does on a bf16 GPU: fp32 weights, bf16 autocast, and the DeepSpeed config built for 'bf16'.
    """
    from trl import SFTConfig, SFTTrainer

    from alignment_core.data.prepared import prepare_sft_data
    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(spec.model.name_or_path)
    data = prepare_sft_data(spec, tokenizer)
    model = load_causal_lm(spec.model, "cpu", trainable=True)
    training = spec.training
    deepspeed = deepspeed_config(spec.distribution, "bf16")
    config = SFTConfig(
        output_dir=str(output_dir),
        max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        seed=training.seed,
        data_seed=training.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        activation_checkpointing=False,
        max_length=spec.data.max_length,
        packing=False,
        assistant_only_loss=False,
        completion_only_loss=False,
        shuffle_dataset=False,
        deepspeed=deepspeed,
        **{"bf16": True, **trainer_overrides(deepspeed)},
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data.train, processing_class=tokenizer)
    trainer.train()
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def test_zero_config_from_spec():
    assert deepspeed_config(DistributionSpec(zero_stage=0), None) is None
    assert trainer_overrides(None) == {}
    zero3 = deepspeed_config(DistributionSpec(zero_stage=3, offload_optimizer=True, offload_params=True), "bf16")
    assert zero3["zero_optimization"]["stage"] == 3 and zero3["zero_optimization"]["offload_param"]["device"] == "cpu"
    # bf16 is autocast over fp32 weights, as without DeepSpeed, never DeepSpeed's bf16 weights.
    assert zero3["torch_autocast"]["enabled"] and not zero3["bf16"]["enabled"]
    assert trainer_overrides(zero3) == {"bf16": False}
    zero2 = deepspeed_config(DistributionSpec(zero_stage=2), None)
    # The trainer's optimizer (its weight-decay groups), not one DeepSpeed builds from a flat parameter list.
    assert "optimizer" not in zero2 and "scheduler" not in zero2 and "torch_autocast" not in zero2
    assert not zero2["fp16"]["enabled"] and not zero2["bf16"]["enabled"] and trainer_overrides(zero2) == {}


def test_gradient_buckets_sized_from_the_trained_parameters(tiny_model_dir):
    from alignment_core.stages.training_arguments import trained_parameters

    # A few large reductions a step on a large model (the integration's "auto" is hidden^2: ~260 on 1.1B).
    assert bucket_elements(1_100_048_384) == BUCKET_ELEMENTS
    # A small model's buckets shrink to a fifth of it (the buffers are allocated whole), never odd.
    assert bucket_elements(12_615_681) == 2_523_138 and bucket_elements(1000) == 1_000_000
    assert bucket_elements(None) == "auto"
    config = deepspeed_config(DistributionSpec(zero_stage=2), "bf16", 12_615_680)["zero_optimization"]
    assert config["reduce_bucket_size"] == config["allgather_bucket_size"] == 2_523_136
    spec = load_spec({"method": "supervised", "model": {"name_or_path": str(tiny_model_dir)},
                      "data": {"train_files": ["x.jsonl"]}, "distribution": {"zero_stage": 2}})
    full = trained_parameters(spec)
    spec.model.lora = {"r": 4}
    spec = load_spec(spec.model_dump())
    assert 0 < trained_parameters(spec) < full
    spec.distribution.zero_stage = 0
    assert trained_parameters(spec) is None  # nothing to size without DeepSpeed


@pytest.mark.slow
@pytest.mark.deepspeed
def test_zero2_losses_match_plain_path_on_cpu(tiny_model_dir, demo_data, tmp_path):
    from alignment_core.context import LocalContext
    from alignment_core.stages import run_stage

    zero2 = parity_spec(tiny_model_dir, demo_data, zero_stage=2)
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29517",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch-extensions"),
        "OMP_NUM_THREADS": "1",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(zero2), str(tmp_path / "zero2"), str(Path(__file__).parent)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The plain runs meanwhile, in this process.
    plain_spec = load_spec(parity_spec(tiny_model_dir, demo_data, zero_stage=0))
    plain_context = LocalContext(tmp_path / "plain")
    assert run_stage(plain_spec, plain_context).status == "completed"
    plain = [row["loss"] for row in plain_context.history if "loss" in row]
    plain_bf16 = bf16_trainer_losses(plain_spec, tmp_path / "plain-bf16")
    stdout, stderr = child.communicate(timeout=600)
    assert child.returncode == 0, stderr[-3000:]

    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["stage"]["status"] == "completed" and result["stage"]["steps"] == STEPS
    metrics = [json.loads(row) for row in (tmp_path / "zero2" / "stage" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in metrics if "loss" in row]
    assert len(plain) == len(losses) == STEPS
    assert losses == pytest.approx(plain, rel=1e-4), f"ZeRO-2 {losses} vs plain {plain}"
    assert len(plain_bf16) == STEPS
    assert result["bf16_losses"] == pytest.approx(plain_bf16, rel=1e-4), (
        f"bf16 ZeRO-2 {result['bf16_losses']} vs plain {plain_bf16}"
    )
    # DeepSpeed, not the plain Trainer, saved the checkpoint: ZeRO's partitioned optimizer states are there.
    checkpoint = tmp_path / "zero2" / "stage" / "checkpoints" / f"checkpoint-{STEPS}"
    assert (checkpoint / f"global_step{STEPS}" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
    built = sorted(path.name for path in (tmp_path / "torch-extensions").rglob("*.so"))
    assert built == [], f"DeepSpeed compiled ops it does not need: {built}"

"""The planner's memory estimate for every benchmark case, beside the peak the GPU run measured.

    python -m bench.gpu.planner_check RESULTS.json [RESULTS.json ...]

Needs no GPU: the shapes are written as config-only folders and estimate_memory reads the config.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench.gpu.qlora import LORA as QLORA_LORA
from bench.gpu.run import CASES, SHAPE_OF
from bench.gpu.shapes import SHAPES


def _config_folder(shape_name: str, root: Path) -> Path:
    from transformers import LlamaConfig

    shape = SHAPES[shape_name]
    folder = root / shape_name
    LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        tie_word_embeddings=False,
    ).save_pretrained(folder)
    return folder


def case_estimate(case_name: str, impl: str, folder: Path, row: dict | None = None) -> float | None:
    """Estimated peak GiB, CUDA context left out (the measured peaks are the caching allocator's), for one
    measured variant: TRL's defaults and the plain QLoRA loop checkpoint and hold the logits; alignd's
    settings and stage do not checkpoint (except QLoRA) and use Liger's fused loss."""
    from alignment_core.planning.gpus import GIB
    from alignment_core.planning.memory import CUDA_CONTEXT_BYTES, estimate_memory
    from bench.gpu.trl_cases import Case, case_spec

    ctx = {
        "model_dir": str(folder),
        "data": {"sft": "x.jsonl", "pref": "x.jsonl", "prompts": "x.jsonl"},
        "device": "cuda",
        "tiny": False,
    }
    baseline = impl == "trl" or impl.startswith("plain")
    if case_name == "qlora_8b" and (impl.startswith("plain") or impl == "stage_fp32"):
        # peft's fp32 upcast of the non-quantized weights: the planner models the stage, which keeps them bf16.
        return None
    if case_name == "ppo_lora":
        from bench.gpu.ppo import FULL, ppo_spec

        if impl == "trl112":
            return None
        spec = ppo_spec(ctx, 4, micro=None if impl == "stage" else FULL["samples"] // 2)
    elif case_name == "qlora_8b":
        ctx["stage_model"] = {
            "lora": QLORA_LORA,
            "quantization": {"bits": 4},
            "gradient_checkpointing": impl != "plain_nockpt",
        }
        spec = case_spec(Case("qlora_8b", "supervised", True, 1, 512), ctx, 10)
    elif case_name == "zero_scaling":  # bench/gpu/zero2.py: the SFT stage, full, 1024 tokens, per-GPU batch
        from alignment_core.specs import JobSpec

        world = row["world_size"]
        spec = JobSpec.model_validate(
            {
                "method": "supervised",
                "model": {"name_or_path": str(folder)},
                "data": {"train_files": ["x.jsonl"], "max_length": 1024},
                "training": {"batch_size": row["tokens_per_step"] // world // 1024},
                "distribution": {"num_workers": world, "gpus_per_worker": 1, "zero_stage": row["zero_stage"]},
            }
        )
    elif case_name in CASES:
        spec = case_spec(CASES[case_name], ctx, 10)
        spec.model.gradient_checkpointing = impl == "trl"
        if impl == "trl":
            spec.model.dtype = "float32"  # TRL loads a model path in fp32
    else:
        return None
    estimate = estimate_memory(spec, "H100-80GB", fused_loss=not baseline)
    return (estimate.total - CUDA_CONTEXT_BYTES) / GIB


def main(paths: list[str]) -> None:
    """One line per measured variant: the allocator's peak reserved and allocated memory, the estimate."""
    with tempfile.TemporaryDirectory() as root:
        folders: dict[str, Path] = {}
        for path in paths:
            for row in json.loads(Path(path).read_text())["results"]:
                shape_name = SHAPE_OF.get(row["case"], "llama-1b")
                folders.setdefault(shape_name, _config_folder(shape_name, Path(root)))
                estimate = case_estimate(row["case"], row["impl"], folders[shape_name], row)
                reserved, allocated = row.get("peak_reserved_gib"), row.get("peak_allocated_gib")
                if estimate is None or not reserved:
                    continue
                print(
                    f"{Path(path).stem[-8:]:8s} {row['case']:12s} {row['impl']:14s} reserved {reserved:6.2f}  "
                    f"allocated {allocated:6.2f}  planner {estimate:6.2f} GiB  {(estimate - reserved) / reserved:+.0%}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])

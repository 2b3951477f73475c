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


def case_estimate(case_name: str, impl: str, folder: Path) -> float:
    """Estimated peak GiB for one measured variant (TRL defaults checkpoint; alignd's settings do not)."""
    from alignment_core.planning.memory import estimate_memory
    from bench.gpu.trl_cases import case_spec

    ctx = {"model_dir": str(folder), "data": {"sft": "x.jsonl", "pref": "x.jsonl"}, "device": "cuda"}
    if case_name == "qlora_8b":
        from bench.gpu.trl_cases import Case

        ctx["stage_model"] = {
            "lora": QLORA_LORA,
            "quantization": {"bits": 4},
            "gradient_checkpointing": impl != "plain_nockpt",
        }
        spec = case_spec(Case("qlora_8b", "supervised", True, 1, 512), ctx, 10)
    else:
        spec = case_spec(CASES[case_name], ctx, 10)
        spec.model.gradient_checkpointing = impl == "trl"
    return estimate_memory(spec, "H100-80GB").gib["total"]


def main(paths: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        folders: dict[str, Path] = {}
        for path in paths:
            for row in json.loads(Path(path).read_text())["results"]:
                if row["case"] not in CASES and row["case"] != "qlora_8b":
                    continue
                shape_name = SHAPE_OF.get(row["case"], "llama-1b")
                folders.setdefault(shape_name, _config_folder(shape_name, Path(root)))
                estimate = case_estimate(row["case"], row["impl"], folders[shape_name])
                measured = row.get("peak_allocated_gib")
                error = f"{(estimate - measured) / measured:+.0%}" if measured else "-"
                print(
                    f"{row['case']:10s} {row['impl']:14s} measured {measured or 0:6.2f} GiB  "
                    f"planner {estimate:6.2f} GiB  {error}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])

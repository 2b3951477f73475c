"""Measure training peaks on a GPU and set them beside the planner's estimates (run through the device tool).

    python tests/planning/gpu_memory_check.py [OUT_DIR] [SHAPE BATCH LENGTH]

A random-weight Llama-shaped model (SHAPE: llama-1.1b as TinyLlama, or llama-3b as Llama-3.2-3B;
default llama-1.1b, micro-batch 4 x 512 tokens), two AdamW steps per set-up,
loaded through load_causal_lm exactly as the stages do. Compares the estimate (less the CUDA context,
which torch does not count) with torch.cuda.max_memory_reserved. Not collected by pytest: it needs a GPU.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignment_core.modeling.loading import load_causal_lm
from alignment_core.planning import GpuInfo, estimate_memory
from alignment_core.planning.memory import CUDA_CONTEXT_BYTES
from alignment_core.specs import JobSpec

GIB = 1024**3
SHAPES = {
    "llama-1.1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                   "intermediate_size": 5632, "vocab_size": 32000, "tie_word_embeddings": False},
    "llama-3b": {"hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
                 "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True},
}
LORA = {"r": 16, "dropout": 0.05}
SETUPS = {
    "full": {},
    "full+ckpt": {"gradient_checkpointing": True},
    "lora": {"lora": LORA},
    "lora+ckpt": {"lora": LORA, "gradient_checkpointing": True},
    "qlora": {"lora": LORA, "quantization": {"bits": 4}},
    "qlora+ckpt": {"lora": LORA, "quantization": {"bits": 4}, "gradient_checkpointing": True},
}


def build_model(folder: Path, shape: str) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape])
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def measure(folder: Path, setup: dict, gpu: GpuInfo, batch: int, length: int) -> dict:
    spec = JobSpec.model_validate({
        "method": "supervised", "model": {"name_or_path": str(folder), **setup},
        "data": {"train_files": ["unused.jsonl"], "max_length": length, "max_prompt_length": length // 2},
        "training": {"batch_size": batch}, "distribution": {"gpus_per_worker": 1},
    })
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = load_causal_lm(spec.model, torch.device("cuda"), trainable=True, seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vocab = model.config.vocab_size
    started = time.perf_counter()
    for _ in range(2):
        ids = torch.randint(0, vocab, (batch, length), device="cuda")
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - started) / 2
    reserved, allocated = torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()
    del model, optimizer
    estimate = estimate_memory(spec, gpu)
    predicted = estimate.total - CUDA_CONTEXT_BYTES
    return {
        "estimate_gib": round(predicted / GIB, 2), "reserved_gib": round(reserved / GIB, 2),
        "allocated_gib": round(allocated / GIB, 2), "ratio": round(predicted / reserved, 3),
        "step_s": round(step_s, 3), "estimate_parts_gib": estimate.gib,
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    shape = sys.argv[2] if len(sys.argv) > 2 else "llama-1.1b"
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    length = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    props = torch.cuda.get_device_properties(0)
    gpu = GpuInfo(props.name, props.total_memory)
    results = {"shape": shape, "batch": batch, "length": length, "gpu": props.name,
               "total_gib": round(props.total_memory / GIB, 2), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / shape
        build_model(folder, shape)
        for name, setup in SETUPS.items():
            try:
                results[name] = measure(folder, setup, gpu, batch, length)
            except Exception as error:  # one failing set-up must not hide the others' numbers
                results[name] = {"error": f"{type(error).__name__}: {error}"[:400]}
            print(name, results[name], flush=True)
    (out / f"gpu_memory_check-{shape}-{batch}x{length}.json").write_text(json.dumps(results, indent=2))
    print(f"\n{props.name}, {shape}, micro-batch {batch} x {length} tokens")
    print(f"{'set-up':12s} {'estimate':>9s} {'reserved':>9s} {'ratio':>6s}")
    for name in SETUPS:
        row = results[name]
        if "error" not in row:
            print(f"{name:12s} {row['estimate_gib']:9.2f} {row['reserved_gib']:9.2f} {row['ratio']:6.2f}")


if __name__ == "__main__":
    main()

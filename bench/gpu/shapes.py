"""Model shapes and synthetic data for the GPU benchmark: random weights, realistic lengths, no downloads."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    """A Llama-architecture shape; `params` is filled in when the model is built."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


# TinyLlama-1.1B's shape and a Mistral-7B-like Llama (7.24B): the models users fine-tune most at these sizes.
SHAPES = {
    "llama-1b": Shape("llama-1b", 2048, 5632, 22, 32, 4, 32000),
    "llama-8b": Shape("llama-8b", 4096, 14336, 32, 32, 8, 32000),
    # PPO decodes what the policy samples: the vocabulary must be the benchmark tokenizer's.
    "llama-1b-v512": Shape("llama-1b-v512", 2048, 5632, 22, 32, 4, 512),
    "tiny": Shape("tiny", 64, 256, 2, 4, 2, 512),
}


def build_model_dir(shape: Shape, directory: Path, device: str, save_dtype: str) -> dict:
    """Save a random-weight Llama of `shape` with alignd's tiny tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from alignment_core.modeling.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=max(shape.vocab, len(tokenizer)),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    # Initialised on the GPU: CPU init of 7B parameters takes minutes.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, save_dtype))
    params = sum(p.numel() for p in model.parameters())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    info = {"shape": shape.name, "params": params, "dtype": save_dtype}
    (directory / "bench_model.json").write_text(json.dumps(info))
    return info


def _text_of_tokens(tokenizer, rng: random.Random, tokens: int) -> str:
    """Random words that tokenize to exactly about `tokens` tokens (byte-level BPE splits at spaces, so
    per-word counts add up)."""
    words = [
        "alpha",
        "model",
        "reward",
        "policy",
        "token",
        "sort",
        "letters",
        "answer",
        "the",
        "of",
        "and",
        "gradient",
        "value",
        "chosen",
        "rejected",
        "prompt",
        "response",
        "batch",
        "layer",
        "kernel",
    ]
    cost = {word: len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) for word in words}
    pieces: list[str] = []
    count = 0
    while count < tokens:
        word = rng.choice(words)
        pieces.append(word)
        count += cost[word]
    return " ".join(pieces)


def write_datasets(model_dir: Path, data_dir: Path, rows: int, seq: int, pair_seq: int, seed: int = 0) -> dict:
    """SFT prompt/completion rows of ~`seq` tokens and preference rows of ~`pair_seq` tokens per side."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {"sft": data_dir / "sft.jsonl", "pref": data_dir / "pref.jsonl", "prompts": data_dir / "prompts.jsonl"}
    prompt_tokens = min(128, seq // 4)
    with paths["sft"].open("w") as out:
        for _ in range(rows):
            row = {
                "prompt": _text_of_tokens(tokenizer, rng, prompt_tokens),
                "completion": _text_of_tokens(tokenizer, rng, seq + 16 - prompt_tokens),
            }
            out.write(json.dumps(row) + "\n")
    with paths["pref"].open("w") as out:
        for _ in range(rows):
            # prompt + side + EOS fits `pair_seq`: the reward trainer drops longer pairs.
            row = {
                "prompt": _text_of_tokens(tokenizer, rng, pair_seq // 2),
                "chosen": _text_of_tokens(tokenizer, rng, pair_seq // 2 - 6),
                "rejected": _text_of_tokens(tokenizer, rng, pair_seq // 2 - 6),
            }
            out.write(json.dumps(row) + "\n")
    with paths["prompts"].open("w") as out:
        for _ in range(rows):
            out.write(json.dumps({"prompt": _text_of_tokens(tokenizer, rng, 128)}) + "\n")
    return {key: str(path) for key, path in paths.items()}

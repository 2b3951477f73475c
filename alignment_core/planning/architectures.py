"""Config facts of well-known hub models, so the planner answers for a model that is not downloaded.

The numbers are those of each model's published config.json. Every entry also records the parameter count
its model card advertises; tests/planning checks that the count built from the facts matches it, which
catches a mistyped width or depth. Instruct / chat variants share their base model's architecture.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """The config.json fields that set a model's size, and the size its model card advertises."""

    name: str  # the hub id of the base model
    model_type: str  # transformers' config class key (llama, qwen2, mistral, gemma2, phi3)
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    advertised_params: float  # from the model card, in parameters
    head_dim: int | None = None  # only where it is not hidden_size / num_attention_heads
    aliases: tuple[str, ...] = field(default=())  # other hub ids of the same architecture

    def config_fields(self) -> dict[str, Any]:
        """Keyword arguments for the transformers config class of `model_type`."""
        fields: dict[str, Any] = {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        if self.head_dim is not None:
            fields["head_dim"] = self.head_dim
        return fields


def _llama(name: str, hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool,
           billions: float, *aliases: str) -> Architecture:
    return Architecture(name, "llama", hidden, layers, heads, kv, inter, vocab, tied, billions * 1e9, None, aliases)


def _qwen2(name: str, hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool,
           billions: float) -> Architecture:
    return Architecture(name, "qwen2", hidden, layers, heads, kv, inter, vocab, tied, billions * 1e9, None,
                        (f"{name}-Instruct",))


_LLAMA3 = 128256
_QWEN_SMALL, _QWEN_LARGE = 151936, 152064  # the 7B and larger Qwen2.5 models pad their vocabulary further

KNOWN_ARCHITECTURES: tuple[Architecture, ...] = (
    # Llama 3.x (3.0, 3.1 and 3.3 share the 8B / 70B shapes).
    _llama("meta-llama/Llama-3.2-1B", 2048, 16, 32, 8, 8192, _LLAMA3, True, 1.24, "meta-llama/Llama-3.2-1B-Instruct"),
    _llama("meta-llama/Llama-3.2-3B", 3072, 28, 24, 8, 8192, _LLAMA3, True, 3.21, "meta-llama/Llama-3.2-3B-Instruct"),
    _llama("meta-llama/Llama-3.1-8B", 4096, 32, 32, 8, 14336, _LLAMA3, False, 8.03,
           "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B-Instruct",
           "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"),
    _llama("meta-llama/Llama-3.1-70B", 8192, 80, 64, 8, 28672, _LLAMA3, False, 70.6,
           "meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Meta-Llama-3.1-70B",
           "meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama/Meta-Llama-3-70B",
           "meta-llama/Meta-Llama-3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"),
    _llama("meta-llama/Llama-3.1-405B", 16384, 126, 128, 8, 53248, _LLAMA3, False, 406,
           "meta-llama/Llama-3.1-405B-Instruct", "meta-llama/Meta-Llama-3.1-405B"),
    # Llama 2 (multi-head attention except 70B) and the TinyLlama shape our benchmarks use.
    _llama("meta-llama/Llama-2-7b-hf", 4096, 32, 32, 32, 11008, 32000, False, 6.74, "meta-llama/Llama-2-7b-chat-hf"),
    _llama("meta-llama/Llama-2-13b-hf", 5120, 40, 40, 40, 13824, 32000, False, 13.0,
           "meta-llama/Llama-2-13b-chat-hf"),
    _llama("meta-llama/Llama-2-70b-hf", 8192, 80, 64, 8, 28672, 32000, False, 69.0, "meta-llama/Llama-2-70b-chat-hf"),
    _llama("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", 2048, 22, 32, 4, 5632, 32000, False, 1.1,
           "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
    # Qwen2.5 (biases on the query / key / value projections).
    _qwen2("Qwen/Qwen2.5-0.5B", 896, 24, 14, 2, 4864, _QWEN_SMALL, True, 0.49),
    _qwen2("Qwen/Qwen2.5-1.5B", 1536, 28, 12, 2, 8960, _QWEN_SMALL, True, 1.54),
    _qwen2("Qwen/Qwen2.5-3B", 2048, 36, 16, 2, 11008, _QWEN_SMALL, True, 3.09),
    _qwen2("Qwen/Qwen2.5-7B", 3584, 28, 28, 4, 18944, _QWEN_LARGE, False, 7.61),
    _qwen2("Qwen/Qwen2.5-14B", 5120, 48, 40, 8, 13824, _QWEN_LARGE, False, 14.7),
    _qwen2("Qwen/Qwen2.5-32B", 5120, 64, 40, 8, 27648, _QWEN_LARGE, False, 32.5),
    _qwen2("Qwen/Qwen2.5-72B", 8192, 80, 64, 8, 29568, _QWEN_LARGE, False, 72.7),
    # Mistral: v0.3 grew the vocabulary to 32768; Nemo's heads are 128 wide, not 5120 / 32.
    Architecture("mistralai/Mistral-7B-v0.1", "mistral", 4096, 32, 32, 8, 14336, 32000, False, 7.24e9,
                 aliases=("mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mistral-7B-Instruct-v0.2")),
    Architecture("mistralai/Mistral-7B-v0.3", "mistral", 4096, 32, 32, 8, 14336, 32768, False, 7.25e9,
                 aliases=("mistralai/Mistral-7B-Instruct-v0.3",)),
    Architecture("mistralai/Mistral-Nemo-Base-2407", "mistral", 5120, 40, 32, 8, 14336, 131072, False, 12.2e9,
                 head_dim=128, aliases=("mistralai/Mistral-Nemo-Instruct-2407",)),
    # Gemma 2: 256-wide heads (128 on 27B) and a 256k vocabulary tied to the output.
    Architecture("google/gemma-2-2b", "gemma2", 2304, 26, 8, 4, 9216, 256000, True, 2.61e9, head_dim=256,
                 aliases=("google/gemma-2-2b-it",)),
    Architecture("google/gemma-2-9b", "gemma2", 3584, 42, 16, 8, 14336, 256000, True, 9.24e9, head_dim=256,
                 aliases=("google/gemma-2-9b-it",)),
    Architecture("google/gemma-2-27b", "gemma2", 4608, 46, 32, 16, 36864, 256000, True, 27.2e9, head_dim=128,
                 aliases=("google/gemma-2-27b-it",)),
    # Phi-3 (fused qkv_proj and gate_up_proj); Phi-3.5-mini has the mini's shape.
    Architecture("microsoft/Phi-3-mini-4k-instruct", "phi3", 3072, 32, 32, 32, 8192, 32064, False, 3.82e9,
                 aliases=("microsoft/Phi-3-mini-128k-instruct", "microsoft/Phi-3.5-mini-instruct")),
    Architecture("microsoft/Phi-3-medium-4k-instruct", "phi3", 5120, 40, 40, 10, 17920, 32064, False, 14.0e9,
                 aliases=("microsoft/Phi-3-medium-128k-instruct",)),
)

_BY_ID = {name.lower(): entry for entry in KNOWN_ARCHITECTURES for name in (entry.name, *entry.aliases)}
# Mirrors (unsloth/…, NousResearch/…) keep the repository name of the model they copy.
_BY_REPO_NAME = {name.split("/")[-1].lower(): entry for name, entry in _BY_ID.items()}


def find_architecture(name: str) -> Architecture | None:
    """The table entry for a hub id (case-insensitive), or for its repository name under another owner."""
    key = name.strip().lower()
    if key in _BY_ID:
        return _BY_ID[key]
    if key.count("/") == 1:
        return _BY_REPO_NAME.get(key.split("/")[1])
    return None


def similar_names(name: str, count: int = 3) -> list[str]:
    """Known hub ids spelled like `name`, for a 'did you mean' hint."""
    spelled = {known: known for entry in KNOWN_ARCHITECTURES for known in (entry.name, *entry.aliases)}
    lowered = {known.lower(): known for known in spelled}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=count, cutoff=0.75)
    return [lowered[match] for match in close]

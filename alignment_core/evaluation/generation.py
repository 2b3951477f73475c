"""Generate completions for prompts, rendered with the model's chat template like every stage does."""

from __future__ import annotations

from typing import Any

from alignment_core.data.chat import Messages, render_prompt
from alignment_core.evaluation.inference import batches, inference_mode, model_device, padding_side, seeded


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str | Messages],
    max_new_tokens: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int | None = None,
) -> list[str]:
    """Decoded completions (special tokens dropped, stopped at EOS); greedy unless do_sample."""
    texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
    device = model_device(model)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": stop_token_ids(model, tokenizer),
        "use_cache": True,  # training may have switched the cache off for gradient checkpointing
    }
    if do_sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    completions: list[str] = []
    # Left padding: every prompt then ends where its generation starts.
    with inference_mode(model), padding_side(tokenizer, "left"), seeded(seed, device):
        for chunk in batches(texts, batch_size):
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            output = model.generate(**encoded, **options)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return completions


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS plus any end-of-turn ids the model's generation config names."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(ids)

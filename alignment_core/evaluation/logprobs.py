"""Log-probabilities of responses given their prompts: the quantity win-rates and perplexity are built on.

Only the response tokens are scored: the assistant turn as the chat template writes it after the
rendered prompt (content, EOS and whatever the template closes the turn with).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from alignment_core.data.chat import Messages, as_assistant_turn, as_messages, render_prompt
from alignment_core.evaluation.inference import batches, inference_mode, model_device, padding_side


class ResponseLogprobs(NamedTuple):
    sums: torch.Tensor  # float32 [N]: summed log-probability of each response's tokens
    counts: torch.Tensor  # int64 [N]: number of response tokens, for length-normalisation

    def mean_per_token(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)


class TemplateMismatch(ValueError):
    """The chat template renders the prompt differently once an answer follows, so the answer can't be cut out."""


def encode_prompt_response(tokenizer: Any, prompt: str | Messages, response: str | Messages) -> tuple[list, list]:
    """Token ids of the rendered prompt and of the response that the template appends to it."""
    prompt_str = render_prompt(tokenizer, prompt)
    full_str = tokenizer.apply_chat_template(
        as_messages(prompt) + as_assistant_turn(response), tokenize=False
    )
    if not full_str.startswith(prompt_str):
        raise TemplateMismatch(
            f"chat template renders the prompt {prompt_str!r} differently when an answer follows: {full_str!r}"
        )
    # Tokenized apart so no token straddles the boundary and the prompt ids equal generation's input.
    prompt_ids = tokenizer(prompt_str, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full_str[len(prompt_str):], add_special_tokens=False)["input_ids"]
    return prompt_ids, response_ids


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: list[str | Messages],
    responses: list[str | Messages],
    batch_size: int = 16,
) -> ResponseLogprobs:
    """Summed log p(response | prompt) per pair and the response token counts."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pairs = [encode_prompt_response(tokenizer, p, r) for p, r in zip(prompts, responses)]
    device = model_device(model)
    sums: list[torch.Tensor] = []
    with inference_mode(model), padding_side(tokenizer, "right"):
        for chunk in batches(pairs, batch_size):
            sums.append(_score_chunk(model, tokenizer.pad_token_id, chunk, device))
    counts = torch.tensor([len(response) for _, response in pairs], dtype=torch.long)
    return ResponseLogprobs(torch.cat(sums) if sums else torch.zeros(0), counts)


def _score_chunk(model: Any, pad_id: int, chunk: list[tuple[list, list]], device: torch.device) -> torch.Tensor:
    sequences = [prompt + response for prompt, response in chunk]
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, :len(sequence)] = torch.tensor(sequence)
        attention_mask[row, :len(sequence)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    totals = []
    for row, (prompt, response) in enumerate(chunk):
        # Token t is predicted by the logits at t - 1; only the response slice is upcast (vocab can be large).
        start = len(prompt)
        predicting = logits[row, start - 1:start + len(response) - 1].float()
        targets = torch.tensor(response, device=predicting.device)
        token_logprobs = torch.log_softmax(predicting, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
        totals.append(token_logprobs.sum())
    return torch.stack(totals).cpu()

"""The demo task's own metric: the share of greedy completions that sort the letters correctly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignment_core.data.chat import Messages, prompt_text
from alignment_core.demo.task import check
from alignment_core.evaluation.generation import generate_completions


@dataclass(frozen=True)
class DemoSample:
    prompt: str
    completion: str
    correct: bool


def demo_samples(
    model: Any, tokenizer: Any, prompts: list[str | Messages], max_new_tokens: int = 16, batch_size: int = 32
) -> list[DemoSample]:
    """Greedy completions for `prompts`, each judged by the demo task's checker."""
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    questions = [prompt_text(prompt) for prompt in prompts]
    return [DemoSample(q, c, check(q, c)) for q, c in zip(questions, completions)]


def rule_satisfaction(
    model: Any, tokenizer: Any, prompts: list[str | Messages], max_new_tokens: int = 16, batch_size: int = 32
) -> float:
    """Share of greedy completions that pass alignment_core.demo.task.check."""
    if not prompts:
        raise ValueError("rule_satisfaction needs at least one prompt")
    samples = demo_samples(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return sum(sample.correct for sample in samples) / len(samples)

"""The one small interface every reward source sits behind, and its error."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class RewardClient(Protocol):
    """Scores completions of prompts; one float per pair, higher is better."""

    def score(self, prompts: list[str], completions: list[str]) -> list[float]: ...


class RewardSourceError(RuntimeError):
    """The reward source failed, timed out or answered something unusable; names the source and why."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = source, reason
        super().__init__(f"reward source {source} failed: {reason}")


def checked_scores(source: str, scores: object, expected: int) -> list[float]:
    """Turn a source's answer into `expected` finite floats, or raise RewardSourceError saying what was wrong."""
    if not isinstance(scores, Sequence) or isinstance(scores, (str, bytes)):
        raise RewardSourceError(source, f"expected a list of {expected} numbers, got {type(scores).__name__}")
    if len(scores) != expected:
        raise RewardSourceError(source, f"returned {len(scores)} scores for {expected} completions")
    values: list[float] = []
    for index, value in enumerate(scores):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RewardSourceError(source, f"score {index} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise RewardSourceError(source, f"score {index} is not finite: {number}")
        values.append(number)
    return values


def score_in_batches(
    score_batch: Callable[[list[str], list[str]], list[float]],
    prompts: list[str],
    completions: list[str],
    batch_size: int,
) -> list[float]:
    """Call `score_batch` on consecutive slices of at most `batch_size` pairs and join the results."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        scores.extend(score_batch(prompts[start : start + batch_size], completions[start : start + batch_size]))
    return scores

"""Reward scoring of a rollout: ask the reward client, then shape the scores.

Shaping, in order: penalties against length hacking (missing EOS, per-token length penalty), running
normalisation (optional), clipping. The raw scores are kept for reporting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alignment_core.rewards.client import RewardClient
from alignment_core.specs import PpoMethod


class RunningMoments:
    """Mean and standard deviation of every score seen so far (Chan's parallel update), resumable."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, values: torch.Tensor) -> None:
        values = values.double()
        batch_count = values.numel()
        if batch_count == 0:
            return
        batch_mean = values.mean().item()
        batch_var = values.var(unbiased=False).item()
        total = self.count + batch_count
        delta = batch_mean - self.mean
        old_m2 = self.var * self.count
        new_m2 = old_m2 + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var = new_m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


@dataclass
class ScoredRollout:
    raw_scores: torch.Tensor  # what the reward source said
    scores: torch.Tensor  # after penalties, normalisation and clipping: what PPO optimises


def shape_scores(
    raw_scores: torch.Tensor,
    has_eos: torch.Tensor,
    response_lengths: torch.Tensor,
    method: PpoMethod,
    moments: RunningMoments | None,
) -> torch.Tensor:
    """Apply the spec's penalties, normalisation (updating `moments`) and clipping to raw scores."""
    scores = raw_scores.clone().double()
    if method.missing_eos_penalty is not None:
        scores = torch.where(has_eos, scores, scores - method.missing_eos_penalty)
    if method.length_penalty:
        scores = scores - method.length_penalty * response_lengths.double()
    if method.normalize_rewards and moments is not None:
        moments.update(scores)
        scores = (scores - moments.mean) / (moments.std + 1e-8)
    if method.reward_clip is not None:
        scores = scores.clamp(-method.reward_clip, method.reward_clip)
    return scores.float()


def score_rollout(
    client: RewardClient,
    prompts: list[str],
    completions: list[str],
    has_eos: torch.Tensor,
    response_lengths: torch.Tensor,
    method: PpoMethod,
    moments: RunningMoments | None,
) -> ScoredRollout:
    """Score completions through the reward client (RewardSourceError on failure) and shape them."""
    raw = torch.tensor(client.score(prompts, completions), dtype=torch.float32)
    return ScoredRollout(raw, shape_scores(raw, has_eos, response_lengths, method, moments))

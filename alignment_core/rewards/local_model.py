"""Rewards from a reward model in this process (a `reward_model` stage's output)."""

from __future__ import annotations

from typing import Any

from alignment_core.rewards.client import RewardSourceError, checked_scores, score_in_batches


class LocalModelRewardClient:
    """Scores with a sequence classifier (one logit) loaded once; batches of at most `batch_size` pairs."""

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 16):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size

    @classmethod
    def from_path(cls, path: str, device: Any, batch_size: int = 16) -> LocalModelRewardClient:
        """Load the reward model frozen, in eval mode, on `device`."""
        from alignment_core.modeling.loading import load_sequence_scorer, load_tokenizer
        from alignment_core.specs import ModelSpec

        try:
            model = load_sequence_scorer(ModelSpec(name_or_path=path), device, trainable=False)
            tokenizer = load_tokenizer(path)
        except (OSError, ValueError) as error:
            raise RewardSourceError(f"reward model '{path}'", f"cannot load: {error}") from error
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls(model, tokenizer, path, batch_size)

    @property
    def source(self) -> str:
        return f"reward model '{self.name}'"

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return score_in_batches(self._score_batch, prompts, completions, self.batch_size)

    def _score_batch(self, prompts: list[str], completions: list[str]) -> list[float]:
        from alignment_core.evaluation.reward import score_texts

        try:
            scores = score_texts(self.model, self.tokenizer, list(prompts), list(completions))
        except RuntimeError as error:  # e.g. out of memory, a sequence longer than the model's positions
            raise RewardSourceError(self.source, f"{type(error).__name__}: {error}") from error
        return checked_scores(self.source, [float(value) for value in scores], len(prompts))

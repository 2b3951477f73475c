"""Rewards from a Ray Serve DeploymentHandle, without importing Ray: any object with the same shape works.

``handle.remote(prompts, completions)`` returns a response whose ``.result(timeout_s=...)`` gives the
scores; the workers deploy the reward model as a Serve app and pass its handle to the stage.
"""

from __future__ import annotations

from typing import Any

from alignment_core.rewards.client import RewardSourceError, checked_scores, score_in_batches


class HandleRewardClient:
    """Calls a DeploymentHandle-like object batch by batch, each call bounded by `timeout_s`."""

    def __init__(self, handle: Any, name: str = "serve", batch_size: int = 16, timeout_s: float = 60.0):
        if not callable(getattr(handle, "remote", None)):
            raise RewardSourceError(f"serve application '{name}'", "the handle has no .remote() method")
        self.handle, self.name = handle, name
        self.batch_size, self.timeout_s = batch_size, timeout_s

    @property
    def source(self) -> str:
        return f"serve application '{self.name}'"

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return score_in_batches(self._score_batch, prompts, completions, self.batch_size)

    def _score_batch(self, prompts: list[str], completions: list[str]) -> list[float]:
        try:
            scores = self.handle.remote(list(prompts), list(completions)).result(timeout_s=self.timeout_s)
        except TimeoutError as error:
            raise RewardSourceError(self.source, f"no answer within {self.timeout_s:g} s (reward.timeout_s)") from error
        except Exception as error:  # Ray's errors (e.g. GetTimeoutError, RayActorError) arrive here untyped
            kind = type(error).__name__
            if "Timeout" in kind:
                raise RewardSourceError(
                    self.source, f"no answer within {self.timeout_s:g} s (reward.timeout_s)"
                ) from error
            raise RewardSourceError(self.source, f"{kind}: {error}") from error
        return checked_scores(self.source, scores, len(prompts))

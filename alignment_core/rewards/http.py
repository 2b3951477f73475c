"""Rewards from an HTTP endpoint: POST {"prompts", "completions"} -> {"scores"}."""

from __future__ import annotations

import httpx

from alignment_core.rewards.client import RewardSourceError, checked_scores, score_in_batches


class HttpRewardClient:
    """Posts batches of at most `batch_size` pairs; every request is bounded by `timeout_s`."""

    def __init__(self, url: str, batch_size: int = 16, timeout_s: float = 60.0, headers: dict | None = None):
        self.url, self.batch_size, self.timeout_s = url, batch_size, timeout_s
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers or {})

    @property
    def source(self) -> str:
        return f"http endpoint {self.url}"

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return score_in_batches(self._score_batch, prompts, completions, self.batch_size)

    def _score_batch(self, prompts: list[str], completions: list[str]) -> list[float]:
        try:
            response = self._client.post(self.url, json={"prompts": prompts, "completions": completions})
        except httpx.TimeoutException as error:
            raise RewardSourceError(self.source, f"no answer within {self.timeout_s:g} s (reward.timeout_s)") from error
        except httpx.HTTPError as error:
            raise RewardSourceError(self.source, f"{type(error).__name__}: {error}") from error
        if response.status_code != 200:
            raise RewardSourceError(self.source, f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as error:
            raise RewardSourceError(self.source, f"answer is not JSON: {response.text[:200]!r}") from error
        if not isinstance(body, dict) or "scores" not in body:
            raise RewardSourceError(self.source, "answer has no 'scores' field")
        return checked_scores(self.source, body["scores"], len(prompts))

    def close(self) -> None:
        self._client.close()

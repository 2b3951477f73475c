"""Rewards from a Python callable: 'module:callable' or a built-in name such as the demo checker."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

from alignment_core.rewards.client import RewardSourceError, checked_scores, score_in_batches

RewardFunction = Callable[[list[str], list[str]], list[float]]

BUILTIN_FUNCTIONS = {
    "demo_sort": "alignment_core.demo.task:reward_function",
}


def resolve_reward_function(name: str) -> RewardFunction:
    """Import the callable named by a built-in name or 'package.module:attribute'."""
    target = BUILTIN_FUNCTIONS.get(name, name)
    source = f"function '{name}'"
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise RewardSourceError(
            source, f"expected 'module:callable' or one of the built-in names {sorted(BUILTIN_FUNCTIONS)}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RewardSourceError(source, f"cannot import module '{module_name}': {error}") from error
    function = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise RewardSourceError(source, f"module '{module_name}' has no attribute '{attribute}'")
    if not callable(function):
        raise RewardSourceError(source, f"'{target}' is not callable")
    return function


class FunctionRewardClient:
    """Calls `function(prompts, completions)` batch by batch, each call bounded by `timeout_s`."""

    def __init__(self, function: RewardFunction, name: str, batch_size: int = 16, timeout_s: float = 60.0):
        self.function, self.name = function, name
        self.batch_size, self.timeout_s = batch_size, timeout_s

    @classmethod
    def from_name(cls, name: str, batch_size: int = 16, timeout_s: float = 60.0) -> FunctionRewardClient:
        return cls(resolve_reward_function(name), name, batch_size, timeout_s)

    @property
    def source(self) -> str:
        return f"function '{self.name}'"

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return score_in_batches(self._score_batch, prompts, completions, self.batch_size)

    def _score_batch(self, prompts: list[str], completions: list[str]) -> list[float]:
        outcome: dict[str, object] = {}

        def call() -> None:
            try:
                outcome["scores"] = self.function(list(prompts), list(completions))
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                outcome["error"] = error

        # A daemon thread so a function that never returns cannot hang the stage nor the interpreter's exit.
        worker = threading.Thread(target=call, name=f"reward-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            raise RewardSourceError(self.source, f"no answer within {self.timeout_s:g} s (reward.timeout_s)")
        if "error" in outcome:
            error = outcome["error"]
            raise RewardSourceError(self.source, f"raised {type(error).__name__}: {error}") from error
        return checked_scores(self.source, outcome.get("scores"), len(prompts))

"""Build the reward client a spec's `method.reward` names."""

from __future__ import annotations

from typing import Any

from alignment_core.rewards.client import RewardClient, RewardSourceError
from alignment_core.rewards.function import FunctionRewardClient
from alignment_core.rewards.handle import HandleRewardClient
from alignment_core.rewards.http import HttpRewardClient
from alignment_core.specs import RewardSource


def build_reward_client(source: RewardSource, device: Any = None, handle: Any = None) -> RewardClient:
    """A client for `source`; type 'serve' needs the DeploymentHandle the workers created (`handle`)."""
    if source.type == "function":
        return FunctionRewardClient.from_name(source.function, source.batch_size, source.timeout_s)
    if source.type == "http":
        return HttpRewardClient(source.url, source.batch_size, source.timeout_s)
    if source.type == "serve":
        name = source.application or source.model
        if handle is None:
            raise RewardSourceError(
                f"serve application '{name}'",
                "no DeploymentHandle was given; reward.type 'serve' runs under the workers, which deploy the "
                "reward model and hand its handle to the stage (use reward.type 'model' to score in-process)",
            )
        return HandleRewardClient(handle, name, source.batch_size, source.timeout_s)
    from alignment_core.rewards.local_model import LocalModelRewardClient

    return LocalModelRewardClient.from_path(source.model, device, source.batch_size)

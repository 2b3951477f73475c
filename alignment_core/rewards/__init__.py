"""Where PPO's rewards come from: a local model, a Ray Serve handle, an HTTP endpoint, a Python function."""

from alignment_core.rewards.client import RewardClient, RewardSourceError
from alignment_core.rewards.factory import build_reward_client

__all__ = ["RewardClient", "RewardSourceError", "build_reward_client"]

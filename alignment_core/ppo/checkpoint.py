"""Everything needed to resume PPO exactly: trained weights, optimizers, schedulers, RNGs, data position,
KL controller and running reward statistics.

Only trainable parameters are stored (LoRA adapters and heads, or all weights when fully fine-tuned);
frozen bases are reloaded from their source on resume, exactly as at the start.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignment_core.context import CHECKPOINT_PREFIX, checkpoint_step
from alignment_core.ppo.kl import KlController
from alignment_core.ppo.prompts import PromptCursor
from alignment_core.ppo.scoring import RunningMoments
from alignment_core.ppo.update import PpoModels

STATE_FILE = "ppo_state.pt"
SUMMARY_FILE = "trainer_state.json"


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the models of this run (another spec or model)."""


@dataclass
class PpoProgress:
    """The non-model state that moves as training goes."""

    kl_controller: KlController
    moments: RunningMoments
    cursor: PromptCursor


def trainable_state(module: nn.Module | None) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module | None, state: dict[str, torch.Tensor], what: str) -> None:
    if module is None:
        if state:
            raise CheckpointMismatch(f"the checkpoint holds a {what} this run does not have")
        return
    parameters = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if set(parameters) != set(state):
        missing, unexpected = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
        raise CheckpointMismatch(f"{what} parameters differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device, parameter.dtype))


def rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_ppo_checkpoint(
    path: Path, step: int, models: PpoModels, progress: PpoProgress, metrics: dict[str, float]
) -> Path:
    """Write the resumable state of update `step` into `path` (the caller marks it complete)."""
    state = {
        "step": step,
        "policy": trainable_state(models.policy),
        "value_model": trainable_state(models.value_model),
        "value_head": trainable_state(models.value_head),
        "policy_optimizer": models.policy_optimizer.state_dict(),
        "value_optimizer": models.value_optimizer.state_dict() if models.value_optimizer else None,
        "policy_scheduler": models.policy_scheduler.state_dict(),
        "value_scheduler": models.value_scheduler.state_dict() if models.value_scheduler else None,
        "kl_controller": progress.kl_controller.state_dict(),
        "reward_moments": progress.moments.state_dict(),
        "prompt_cursor": progress.cursor.state_dict(),
        "rng": rng_state(),
    }
    torch.save(state, path / STATE_FILE)
    summary = {
        "step": step,
        "kl_coef": progress.kl_controller.value,
        "prompt_cursor": progress.cursor.state_dict(),
        "metrics": metrics,
    }
    (path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return path


def load_ppo_checkpoint(path: Path, models: PpoModels, progress: PpoProgress) -> int:
    """Restore everything saved by `save_ppo_checkpoint`, RNGs last; returns the step to continue after."""
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    load_trainable_state(models.policy, state["policy"], "policy")
    load_trainable_state(models.value_model, state["value_model"], "value model")
    load_trainable_state(models.value_head, state["value_head"], "value head")
    models.policy_optimizer.load_state_dict(state["policy_optimizer"])
    models.policy_scheduler.load_state_dict(state["policy_scheduler"])
    if models.value_optimizer is not None:
        models.value_optimizer.load_state_dict(state["value_optimizer"])
        models.value_scheduler.load_state_dict(state["value_scheduler"])
    progress.kl_controller.load_state_dict(state["kl_controller"])
    progress.moments.load_state_dict(state["reward_moments"])
    progress.cursor.load_state_dict(state["prompt_cursor"])
    restore_rng_state(state["rng"])
    return int(state["step"])


def prune_checkpoints(root: Path, keep: int | None) -> None:
    """Delete all but the newest `keep` complete checkpoints under `root`."""
    if keep is None or not root.is_dir():
        return
    complete = sorted(
        (
            path
            for path in root.glob(f"{CHECKPOINT_PREFIX}*")
            if (path / "complete").exists() and path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ),
        key=checkpoint_step,
    )
    for path in complete[:-keep]:
        shutil.rmtree(path, ignore_errors=True)

"""One module per method, each exposing ``run(spec, context) -> StageResult``."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from alignment_core.context import StageContext
from alignment_core.specs import IMPLEMENTED_METHODS, JobSpec

STAGE_MODULES = {
    "supervised": "alignment_core.stages.sft",
    "reward_model": "alignment_core.stages.reward_model",
    "dpo": "alignment_core.stages.dpo",
    "ppo": "alignment_core.stages.ppo",
}


class MethodNotAvailable(ValueError):
    """The method is a known name without a stage yet."""


@dataclass
class StageResult:
    """What a stage hands back; `model_dir` holds a loadable model (adapter or merged) + tokenizer."""

    status: Literal["completed", "cancelled", "paused"]
    model_dir: Path | None
    steps: int
    trained_tokens: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # last training metrics
    eval_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["model_dir"] = str(self.model_dir) if self.model_dir else None
        return data


def run_stage(spec: JobSpec, context: StageContext) -> StageResult:
    """Run the stage for the spec's method."""
    method = spec.method.type
    if method not in IMPLEMENTED_METHODS:
        raise MethodNotAvailable(f"method '{method}' is not available yet; use one of {list(IMPLEMENTED_METHODS)}")
    module = importlib.import_module(STAGE_MODULES[method])
    return module.run(spec, context)

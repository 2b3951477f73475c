"""Pipeline hand-off: turn a stored spec's names (file ids, other jobs' fine_tuned_model) into paths.

The stored spec stays as the user wrote it (specs are immutable); the dispatcher runs a resolved copy.
A name that is neither an input of the job nor a registered model is passed through untouched, so
hub ids, local paths and the built-in 'alignd-tiny' keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alignment_core.specs import JobSpec


class InputNotReady(ValueError):
    """A file or model the job names cannot be found; names the field and the value."""

    def __init__(self, field: str, value: str, reason: str):
        super().__init__(f"{field}: '{value}' {reason}")
        self.field, self.value = field, value


def resolve_spec(
    spec: dict[str, Any],
    input_files: dict[str, str],
    input_models: dict[str, str],
    file_uri: Callable[[str], str],
    lookup_model: Callable[[str], str | None],
) -> JobSpec:
    """The runnable spec: file ids -> storage paths, fine_tuned_model names -> registered model paths."""
    resolved = JobSpec.model_validate(spec).model_copy(deep=True)

    def model_path(field: str, name: str) -> str:
        if name in input_models:
            return input_models[name]
        path = lookup_model(name)
        if path is None and name.startswith(("ft-", "ft:")):
            raise InputNotReady(field, name, "is not a registered model (has its job succeeded?)")
        return path or name

    def file_path(field: str, name: str) -> str:
        if name in input_files:
            return file_uri(input_files[name])
        if name.startswith("file-"):
            raise InputNotReady(field, name, "is not an uploaded file of this project")
        return name

    resolved.model.name_or_path = model_path("model", resolved.model.name_or_path)
    resolved.data.train_files = [file_path("data.train_files", name) for name in resolved.data.train_files]
    resolved.data.eval_files = [file_path("data.eval_files", name) for name in resolved.data.eval_files]
    if resolved.method.type == "ppo" and resolved.method.reward.model:
        resolved.method.reward.model = model_path("method.reward.model", resolved.method.reward.model)
    return resolved


def reward_model_to_serve(spec: JobSpec) -> bool:
    """PPO whose reward is a model: the workers serve it with Ray Serve instead of loading it in-process."""
    return (
        spec.method.type == "ppo"
        and spec.method.reward.type in ("model", "serve")
        and spec.method.reward.model is not None
        and spec.method.reward.application is None
    )

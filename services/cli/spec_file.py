"""A YAML job spec for the CLI: read it, name every problem in it at once, check its inputs before training.

A typo'd field is reported with the field it was probably meant to be; a missing data file, a data file the
method cannot train on, a model folder that is not there or a method without a stage yet are reported
before anything heavy loads, so `alignd train` fails in a second with the file and line, not after the
model has loaded with a traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel, ValidationError

from alignment_core.modeling.model_names import written_as_path
from services.cli.hub_model_check import check_hub_model

# What people call the methods (TRL's trainer names, papers), and the method type each means.
METHOD_ALIASES = {"sft": "supervised", "rm": "reward_model", "reward": "reward_model", "rlhf": "ppo"}


def read_spec_file(path: Path, max_steps: int | None) -> Any:
    """Load and validate a YAML spec; --max-steps overrides training.max_steps. Bad specs raise BadParameter."""
    from alignment_core.specs import load_spec

    try:
        data = _load_yaml(path) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: a spec is a mapping (method:, model:, data:, ...), "
                                 f"got a YAML {type(data).__name__}")
    if max_steps is not None:
        training = data.setdefault("training", {})
        if isinstance(training, dict):
            training["max_steps"] = max_steps
    try:
        return load_spec(data)
    except ValidationError as error:
        problems = spec_problems(error, data)
        raise typer.BadParameter(f"{path}:\n" + "\n".join(f"  {problem}" for problem in problems)) from None
    except ValueError as error:
        raise typer.BadParameter(f"{path}: {error}") from None


def _load_yaml(path: Path) -> Any:
    """yaml.safe_load of the file, its errors naming it ('in "spec.yaml", line 3', not '<unicode string>')."""
    # A loader on the text keeps the snippet with a caret under the error, which a file stream's marks lose.
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8-sig"))
    loader.name = str(path)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def spec_problems(error: ValidationError, data: dict[str, Any]) -> list[str]:
    """One line per problem, named by the field as written in the YAML; unknown fields get a suggestion."""
    from alignment_core.specs import JobSpec

    problems = []
    for item in error.errors():
        location = _yaml_location(item.get("loc", ()), data)
        message = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
            known = _field_names(JobSpec, location[:-1], data)
            close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            elif known:
                message += f" (expected one of: {', '.join(known)})"
        if item.get("type") == "union_tag_invalid" and location == ("method",):
            tag = str(item.get("ctx", {}).get("tag", ""))
            known = re.findall(r"'([^']+)'", str(item.get("ctx", {}).get("expected_tags", "")))
            meant = METHOD_ALIASES.get(tag.lower()) or next(iter(difflib.get_close_matches(tag, known, n=1)), None)
            message = f"unknown method type '{tag}'" + (f" (did you mean '{meant}'?)" if meant else "") + \
                f"; expected one of: {', '.join(known)}"
        message = message.removeprefix("Value error, ")
        dotted = ".".join(str(part) for part in location)
        problems.append(f"{dotted}: {message}" if dotted else message)
    return problems


def _yaml_location(location: tuple, data: dict[str, Any]) -> tuple:
    """pydantic puts the method's tag in the path (method.dpo.beta); the YAML has method.beta."""
    method = data.get("method")
    tag = method.get("type") if isinstance(method, dict) else method
    if len(location) > 1 and location[0] == "method" and location[1] == tag:
        return (location[0], *location[2:])
    return tuple(location)


def _field_names(model: type[BaseModel], location: tuple, data: dict[str, Any]) -> list[str]:
    """The field names valid at `location` (a path of field names from JobSpec)."""
    candidates: list[type[BaseModel]] = [model]
    for part in location:
        nested = []
        for candidate in candidates:
            field = candidate.model_fields.get(str(part))
            if field is not None:
                nested += _models_in(field.annotation)
        candidates = nested
    if location == ("method",):
        method = data.get("method")
        tag = method.get("type") if isinstance(method, dict) else None
        typed = [c for c in candidates if tag in typing.get_args(c.model_fields["type"].annotation)]
        candidates = typed or candidates
    return sorted({name for candidate in candidates for name in candidate.model_fields})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _models_in(argument)]


def check_spec_inputs(spec: Any) -> None:
    """Refuse what would only fail after the model loads: the method, the data files, a local model folder,
    a hub model that is not cached where the hub cannot give it."""
    from alignment_core.data.demo_sources import resolve_data_path
    from alignment_core.data.formats import DataFormatError, check_method_accepts, validate_file
    from alignment_core.specs import IMPLEMENTED_METHODS

    method = spec.method.type
    if method not in IMPLEMENTED_METHODS:
        raise typer.BadParameter(f"method '{method}' has no stage yet; use one of {list(IMPLEMENTED_METHODS)}")
    resolve_model_path(spec)
    if not _is_local_model(spec.model.name_or_path):
        check_hub_model(spec.model.name_or_path)
    # '~' is the shell's; the loaders would read '~/data.jsonl' literally.
    spec.data.train_files = [_expand_home(name) for name in spec.data.train_files]
    spec.data.eval_files = [_expand_home(name) for name in spec.data.eval_files]
    for field, files in (("data.train_files", spec.data.train_files), ("data.eval_files", spec.data.eval_files)):
        for name in files:
            resolved = resolve_data_path(name)
            if not Path(resolved).is_file():
                where = os.path.abspath(resolved)
                resolved_note = f" (resolved to {where})" if where != name else ""
                raise typer.BadParameter(f"{field}: no file '{name}'{resolved_note}")
            try:
                report = validate_file(resolved, spec.data.format)
                check_method_accepts(method, report.format)
            except DataFormatError as error:
                raise typer.BadParameter(f"{field}: {name}: {error}") from None


def resolve_model_path(spec: Any) -> None:
    """A local model folder as an absolute path ('~' expanded); a missing folder raises BadParameter."""
    spec.model.name_or_path = _check_model(spec.model.name_or_path)


def _is_local_model(name: str) -> bool:
    from alignment_core.modeling.tiny import TINY_MODEL_NAME

    return name == TINY_MODEL_NAME or Path(name).is_dir()


def _expand_home(name: str) -> str:
    return os.path.expanduser(name) if name.startswith("~") else name


def _check_model(name: str) -> str:
    """The model name to load: a local folder as an absolute path ('~' expanded), else the name as given."""
    from alignment_core.modeling.tiny import TINY_MODEL_NAME

    if name == TINY_MODEL_NAME:
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        return os.path.abspath(path)
    if path.exists():
        raise typer.BadParameter(f"model.name_or_path: '{name}' is a file; a local model is a folder "
                                 "(config.json and weights)")
    if written_as_path(name):
        raise typer.BadParameter(f"model.name_or_path: no model folder '{name}' "
                                 f"(resolved to {os.path.abspath(path)}); a hub id is written 'org/name'")
    return name

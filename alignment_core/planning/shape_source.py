"""Where the planner gets a model's shape, so it answers for models that are not downloaded.

In order: the config.json of a local folder or of the Hugging Face cache; the table of well-known
architectures (no network: the hub may be unreachable, and gated models need a token); the hub itself when
it is online; last, a shape the user gives (ShapeOverrides). Overrides also change a found shape, for a
what-if ('this model with 40 layers'). Every shape carries a sentence saying which source it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment_core.modeling.model_folders import ModelKind, config_source
from alignment_core.planning.architectures import KNOWN_ARCHITECTURES, Architecture, find_architecture, similar_names
from alignment_core.planning.model_shape import ModelConfigUnavailable, ModelShape, shape_from_config

# What a model with no config anywhere needs to be built (as a Llama): ShapeOverrides' field names.
REQUIRED_SHAPE = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size")
# ShapeOverrides' fields and the config.json names they set.
CONFIG_NAMES = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


class IncompleteShape(ModelConfigUnavailable):
    """No config for the model, and the shape given leaves out fields; `missing` names them."""

    def __init__(self, message: str, missing: tuple[str, ...]):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class ShapeOverrides:
    """A shape, or changes to one: `params` sets the depth that gives that many parameters."""

    params: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.params is not None and self.num_layers is not None:
            raise ValueError("give the parameter count or the number of layers, not both: the count sets the depth")
        for name, value in dataclasses.asdict(self).items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def shape_fields(self) -> dict[str, int]:
        return {name: value for name, value in dataclasses.asdict(self).items()
                if value is not None and name != "params"}

    def __bool__(self) -> bool:
        return self.params is not None or bool(self.shape_fields)


def parse_param_count(text: str) -> int:
    """'7B', '1.5b', '500M', '7e9' or '7000000000' as a number of parameters."""
    match = _COUNT.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a parameter count (write e.g. 7B, 1.5B, 500M or 7e9)")
    count = int(float(match.group(1)) * _SCALE[match.group(2).lower()])
    if count < 1:
        raise ValueError(f"'{text}' is not a positive parameter count")
    return count


@functools.lru_cache(maxsize=64)
def resolve_model_shape(name_or_path: str, kind: ModelKind = "causal_lm",
                        overrides: ShapeOverrides | None = None) -> ModelShape:
    """The shape of `name_or_path` from the first source that has it (module docstring), overrides applied."""
    overrides = overrides or ShapeOverrides()
    config, source, problems = _found_config(name_or_path)
    if config is None:
        config, source = _given_config(name_or_path, overrides, problems)
    changed = _apply(config, overrides)
    if changed:
        source += "; changed: " + ", ".join(changed)
    if overrides.params is not None:
        layers = _layers_for(config, kind, overrides.params)
        _set_layers(config.get_text_config(), layers)
        source += f"; {layers} layers to make {overrides.params / 1e9:.3g}B parameters"
    return shape_from_config(config, kind, source=source)


def _found_config(name: str) -> tuple[Any, str, list[str]]:
    """(config, its source, []) from disk, the table or the hub; (None, '', why each failed) if none has it."""
    from transformers import AutoConfig

    problems: list[str] = []
    source = config_source(name)
    if Path(source).is_dir():
        try:
            return AutoConfig.from_pretrained(source), f"config.json in {source}", []
        except (OSError, ValueError) as error:
            problems.append(f"its config.json cannot be read ({error})")
    else:
        try:
            return (AutoConfig.from_pretrained(source, local_files_only=True),
                    f"config.json of {source} in the Hugging Face cache", [])
        except (OSError, ValueError):
            problems.append("no config.json on disk (not a local folder, not in the Hugging Face cache)")
        known = find_architecture(source)
        if known is not None:
            return _table_config(known), f"alignd's table of known architectures ({known.name}), not downloaded", []
        problems.append("not in alignd's table of known architectures")
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # read at call time, as transformers reads it
            problems.append("the hub was not asked (HF_HUB_OFFLINE is on)")
        else:
            try:
                return AutoConfig.from_pretrained(source), f"config.json of {source} from the Hugging Face hub", []
            except (OSError, ValueError) as error:
                problems.append(f"the hub did not give it ({_first_line(error)})")
    return None, "", problems


def _given_config(name: str, overrides: ShapeOverrides, problems: list[str]) -> tuple[Any, str]:
    """A Llama config from a complete shape given, else the nearest known architecture for a parameter count."""
    given = overrides.shape_fields
    missing = tuple(field for field in REQUIRED_SHAPE
                    if field not in given and not (field == "num_layers" and overrides.params is not None))
    if not missing:
        from transformers import LlamaConfig

        fields = {CONFIG_NAMES[key]: value for key, value in given.items()}
        fields.setdefault("num_hidden_layers", 1)  # the parameter count sets it
        return LlamaConfig(**fields, tie_word_embeddings=False), f"the shape given for '{name}' (a Llama architecture)"
    if overrides.params is not None:
        template = min(KNOWN_ARCHITECTURES, key=lambda known: abs(math.log(known.advertised_params / overrides.params)))
        return _table_config(template), f"no config for '{name}': shaped like {template.name}"
    if given:
        raise IncompleteShape(f"model '{name}': {'; '.join(problems)}; so the shape given must be complete",
                              missing)
    hint = similar_names(name)
    raise ModelConfigUnavailable(
        f"model '{name}': no shape to plan with: " + "; ".join(problems)
        + (f" (did you mean {', '.join(hint)}?)" if hint else "")
    )


def _table_config(known: Architecture) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(known.model_type, **known.config_fields())


def _apply(config: Any, overrides: ShapeOverrides) -> list[str]:
    """Set the overridden fields on the (text) config; the 'name value' of each one that changed."""
    text_config = config.get_text_config()
    changed = []
    for field, value in overrides.shape_fields.items():
        config_name = CONFIG_NAMES[field]
        if getattr(text_config, config_name, None) == value:
            continue
        if config_name == "num_hidden_layers":
            _set_layers(text_config, value)
        else:
            setattr(text_config, config_name, value)
        changed.append(f"{config_name} {value}")
    if overrides.num_heads is not None and overrides.num_kv_heads is None:
        # Grouped-query attention keeps its group count only if it still divides the heads.
        kv_heads = getattr(text_config, "num_key_value_heads", None)
        if kv_heads and text_config.num_attention_heads % kv_heads:
            text_config.num_key_value_heads = text_config.num_attention_heads
    return changed


def _set_layers(text_config: Any, layers: int) -> None:
    """A new depth; per-layer lists (sliding / full attention) keep their repeating pattern."""
    pattern = getattr(text_config, "layer_types", None)
    text_config.num_hidden_layers = layers
    if pattern:
        text_config.layer_types = [pattern[index % len(pattern)] for index in range(layers)]


def _layers_for(config: Any, kind: ModelKind, params: int) -> int:
    """The depth that brings the config's parameter count closest to `params` (at least one block)."""
    counts = []
    for layers in (1, 2):
        probe = config.__class__.from_dict(config.to_dict())
        _set_layers(probe.get_text_config(), layers)
        counts.append(shape_from_config(probe, kind).total_params)
    block = counts[1] - counts[0]
    rest = counts[0] - block
    return max(1, round((params - rest) / block))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

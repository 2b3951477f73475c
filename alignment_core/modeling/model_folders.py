"""What a saved model folder holds: full weights, or a PEFT adapter on top of another model.

alignd writes ``alignd_model.json`` next to what it saves, naming the kind (causal LM or sequence
scorer) and the base model, so a later job can load an adapter folder as a whole model: the base is
loaded (recursively, since a base may itself be an adapter folder) and the adapter merged in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from alignment_core.modeling.tiny import TINY_MODEL_NAME, resolve_model_path

ModelKind = Literal["causal_lm", "sequence_scorer"]

MODEL_CARD_FILE = "alignd_model.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MERGED_SUBDIR = "merged"


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as it is; names the folder and what is missing."""


def stable_model_name(name_or_path: str) -> str:
    """An absolute path for local folders (so a saved adapter finds its base from anywhere), else the name."""
    if name_or_path == TINY_MODEL_NAME or not os.path.exists(name_or_path):
        return name_or_path
    return str(Path(name_or_path).resolve())


def local_folder(name_or_path: str) -> Path | None:
    """The folder behind a name (building the tiny model if named), or None for a hub id."""
    path = Path(resolve_model_path(name_or_path))
    return path if path.is_dir() else None


def is_adapter_folder(name_or_path: str) -> bool:
    folder = local_folder(name_or_path)
    return folder is not None and (folder / ADAPTER_CONFIG_FILE).exists()


def read_model_card(folder: Path) -> dict[str, Any]:
    """alignd's note about a saved model, or an empty dict for folders alignd did not write."""
    card = folder / MODEL_CARD_FILE
    return json.loads(card.read_text()) if card.exists() else {}


def write_model_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def adapter_kind(folder: Path) -> ModelKind:
    """Whether the adapter in `folder` was trained on a causal LM or on a sequence scorer."""
    kind = read_model_card(folder).get("kind")
    if kind in ("causal_lm", "sequence_scorer"):
        return kind
    task_type = json.loads((folder / ADAPTER_CONFIG_FILE).read_text()).get("task_type")
    return "sequence_scorer" if task_type == "SEQ_CLS" else "causal_lm"


def adapter_base(folder: Path) -> str:
    """The model the adapter in `folder` was trained on (alignd's note first, then PEFT's config)."""
    base = read_model_card(folder).get("base_model")
    if not base:
        base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelFolderError(
            f"{folder}: adapter folder names no base model (base_model_name_or_path in {ADAPTER_CONFIG_FILE})"
        )
    return base


def merged_weights_folder(folder: Path) -> Path | None:
    """``folder/merged`` when save_model wrote full merged weights there, else None."""
    merged = folder / MERGED_SUBDIR
    return merged if (merged / "config.json").exists() else None


def config_source(name_or_path: str) -> str:
    """A folder or hub id holding the config.json of the (base) architecture behind `name_or_path`."""
    folder = local_folder(name_or_path)
    if folder is None:
        return name_or_path
    while (folder / ADAPTER_CONFIG_FILE).exists() and not (folder / "config.json").exists():
        merged = merged_weights_folder(folder)
        if merged is not None:
            return str(merged)
        base = adapter_base(folder)
        base_folder = local_folder(base)
        if base_folder is None:
            return base
        folder = base_folder
    return str(folder)

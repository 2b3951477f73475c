"""Save a trained model in Hugging Face format so load_causal_lm / load_sequence_scorer can load it again.

A PEFT model is saved as its adapter (plus tokenizer and alignd_model.json naming the base and kind);
with ``merge_adapters`` the base with the adapter merged in goes to ``out_dir/merged`` as well.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignment_core.modeling.loading import merge_adapter_folder
from alignment_core.modeling.model_folders import MERGED_SUBDIR, ModelKind, write_model_card
from alignment_core.modeling.reference import is_peft_model
from alignment_core.modeling.tiny import TINY_MODEL_NAME, resolve_model_path


def model_kind(model: Any) -> ModelKind:
    base = model.get_base_model() if is_peft_model(model) else model
    return "sequence_scorer" if type(base).__name__.endswith("ForSequenceClassification") else "causal_lm"


@contextmanager
def _base_named_as_folder(model: Any) -> Iterator[None]:
    """peft and transformers read an adapter's base from adapter_config.json, where the built-in alias means
    nothing outside alignd (loading it offline retried the hub for 40 s, then failed): that file names the
    alias's folder. alignd's own card keeps the alias, which resolves under any ALIGND_HOME."""
    config = model.peft_config["default"]
    alias = config.base_model_name_or_path
    if alias == TINY_MODEL_NAME:
        config.base_model_name_or_path = resolve_model_path(alias)
    try:
        yield
    finally:
        config.base_model_name_or_path = alias


def save_model(model: Any, tokenizer: Any, out_dir: Path, merge_adapters: bool = False) -> Path:
    """Write weights (or the adapter) + tokenizer + alignd_model.json to `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = is_peft_model(model)
    if adapter:
        base_model = model.peft_config["default"].base_model_name_or_path
        with _base_named_as_folder(model):
            model.save_pretrained(out_dir)
    else:
        base_model = getattr(model.config, "_name_or_path", None)
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    card = {
        "kind": model_kind(model),
        "base_model": base_model,
        "adapter": adapter,
        "merged": None,
    }
    write_model_card(out_dir, card)
    if adapter and merge_adapters:
        # Built beside the final name and renamed, so a crash never leaves half a merged model.
        staging = out_dir / f".{MERGED_SUBDIR}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        merge_adapter_folder(out_dir, staging)
        final = out_dir / MERGED_SUBDIR
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        card["merged"] = MERGED_SUBDIR
        write_model_card(out_dir, card)
    return out_dir

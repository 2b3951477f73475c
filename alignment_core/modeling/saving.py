"""Save a trained model in Hugging Face format so load_causal_lm / load_sequence_scorer can load it again.

A PEFT model is saved as its adapter (plus tokenizer and alignd_model.json naming the base and kind);
with ``merge_adapters`` the base with the adapter merged in goes to ``out_dir/merged`` as well.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from alignment_core.modeling.loading import merge_adapter_folder
from alignment_core.modeling.model_folders import MERGED_SUBDIR, ModelKind, write_model_card
from alignment_core.modeling.reference import is_peft_model


def model_kind(model: Any) -> ModelKind:
    base = model.get_base_model() if is_peft_model(model) else model
    return "sequence_scorer" if type(base).__name__.endswith("ForSequenceClassification") else "causal_lm"


def save_model(model: Any, tokenizer: Any, out_dir: Path, merge_adapters: bool = False) -> Path:
    """Write weights (or the adapter) + tokenizer + alignd_model.json to `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = is_peft_model(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if adapter:
        base_model = model.peft_config["default"].base_model_name_or_path
    else:
        base_model = getattr(model.config, "_name_or_path", None)
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

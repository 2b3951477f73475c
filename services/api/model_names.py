"""Check a base or reward model name at create time, so a typo is a 400 naming the field, not a late failure.

A name is the built-in 'alignd-tiny', a local folder, or a Hugging Face hub id. With the hub online the
API does not ask it whether an id exists: that is a network call of unbounded latency inside a request,
and gated or private models may need a token only the workers hold; the worker's download tells then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from alignment_core.modeling.model_names import PATH_PREFIXES
from alignment_core.modeling.tiny import TINY_MODEL_NAME
from services.api.errors import ApiError

# OpenAI-hosted models, the first name an OpenAI SDK user types. Bare names like these would pass as hub ids and
# fail minutes later in the worker's download.
OPENAI_HOSTED = re.compile(r"^(gpt-|chatgpt-|o\d(-|$)|davinci-|babbage-|text-)", re.IGNORECASE)


def _not_found(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="model_not_found")


def check_model_name(name: str, param: str) -> str:
    """The name the spec should carry (local paths made absolute); raises ApiError(400) if it cannot load."""
    if name == TINY_MODEL_NAME or not name:
        return name  # an empty name is the spec's to refuse (min_length), with its own message
    path = Path(name).expanduser()
    if path.is_dir():
        # Absolute, so the worker finds the same folder whatever its working directory ('~' expanded too).
        return os.path.abspath(path)
    if path.exists():
        raise _not_found(param, f"'{name}' is a file; a local model is a folder (config.json and weights)")
    if OPENAI_HOSTED.match(name):
        raise _not_found(param, f"'{name}' is an OpenAI-hosted model, which cannot be fine-tuned here; use "
                         f"{TINY_MODEL_NAME}, a local folder or a Hugging Face hub id "
                         "such as Qwen/Qwen2.5-0.5B-Instruct")
    if name.startswith(PATH_PREFIXES):
        raise _not_found(param, f"no local folder '{name}' (resolved to {os.path.abspath(path)})")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _not_found(
            param,
            f"'{name}' is neither a local folder nor a valid Hugging Face hub id "
            "('org/name'), nor a job id or fine-tuned model of this project",
        ) from None
    # Read at call time: transformers reads the same attribute, so a test or an embedding app can flip it.
    if constants.HF_HUB_OFFLINE and not _in_hub_cache(name):
        raise _not_found(
            param,
            f"'{name}' is not available offline: it is not a local folder and not in the "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is on; "
            f"download it first (huggingface-cli download {name}) or pass a local folder",
        )
    return name


def _in_hub_cache(repo_id: str) -> bool:
    """A cached snapshot of a model (config.json) or of a PEFT adapter repo (adapter_config.json)."""
    return any(
        isinstance(try_to_load_from_cache(repo_id, marker), str) for marker in ("config.json", "adapter_config.json")
    )

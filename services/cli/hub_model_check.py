"""Before `alignd train` loads a hub model: is it in the Hugging Face cache, or can the hub give it?

Otherwise the loader fails late and blames the network: with HF_HUB_OFFLINE after the imports ("couldn't
connect to 'https://huggingface.co'"), and without a network after about a minute of retries, for what is as
often a mistyped name. One short question to the hub (or none when offline) tells which it is.
"""

from __future__ import annotations

import typer

HUB_CHECK_TIMEOUT_S = 10.0
# A model repo holds one of these; a cached copy of either means the loader can run offline.
MODEL_FILES = ("config.json", "adapter_config.json")


def check_hub_model(name: str) -> None:
    """Raise BadParameter when hub id `name` is not cached and the hub is off, unreachable or lacks it."""
    from huggingface_hub import constants, is_offline_mode, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        if any(isinstance(try_to_load_from_cache(name, file), str) for file in MODEL_FILES):
            return
    except HFValidationError as error:
        raise typer.BadParameter(f"model.name_or_path: '{name}' is neither a model folder here nor a hub id "
                                 f"({error})") from None
    missing = f"model.name_or_path: '{name}' is neither a model folder here nor in the Hugging Face cache " \
              f"({constants.HF_HUB_CACHE})"
    if is_offline_mode():
        raise typer.BadParameter(f"{missing}, and offline mode is on (HF_HUB_OFFLINE), so the hub is not asked; "
                                 "check the name, download the model where there is a network "
                                 "(hf download ORG/NAME) or give its folder") from None
    try:
        model_info(name, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:
        return  # it exists; the loader asks for the token and says so
    except RepositoryNotFoundError:
        raise typer.BadParameter(f"{missing}, and the Hugging Face hub has no model '{name}' (or it is private: "
                                 "log in with hf auth login); check the name") from None
    except HfHubHTTPError:
        return  # the hub answered something else (busy, rate limit): the loader's own retries may get through
    except Exception as error:  # noqa: BLE001 - the HTTP client's connection errors share no base class we import
        reason = str(error).strip() or type(error).__name__
        raise typer.BadParameter(f"{missing}, and the Hugging Face hub cannot be reached ({reason}); check the "
                                 "name, connect, or download the model elsewhere and give its folder") from None

"""What a job's ``model`` string names: a builtin model, a local directory or a Hugging Face hub id.

Checked by the API when a job is submitted (so a typo fails at once, not after a queue wait) and resolved
by the workers when they load it. No torch here: the API and the Mac worker use this module.
"""

from __future__ import annotations

import re
from pathlib import Path

from ktoforge.builtin_model import TINY_MISTRAL, builtin_path, is_builtin

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class ModelError(ValueError):
    """The model string names nothing we can load."""


def check_model(model: str) -> str:
    """'builtin', 'local' or 'hub'; ModelError for anything else."""
    if is_builtin(model):
        if model != TINY_MISTRAL:
            raise ModelError(f"unknown builtin model {model!r}; available: {TINY_MISTRAL}")
        return "builtin"
    if model.startswith(("/", ".", "~")):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"local model path {model!r} has no config.json (expected a Hugging Face model folder)")
        return "local"
    if HUB_ID.match(model):
        return "hub"
    raise ModelError(f"{model!r} is neither builtin:tiny-mistral, a local model folder, nor a hub id like "
                     "mistralai/Mistral-7B-Instruct-v0.3")


def resolve(model: str, cache_dir: Path) -> str:
    """A path or hub id that transformers, Unsloth and mlx-lm accept (builtin models are generated here)."""
    kind = check_model(model)
    if kind == "builtin":
        return str(builtin_path(model, cache_dir))
    if kind == "local":
        return str(Path(model).expanduser())
    return model


def check_hub_access(model_id: str, token: str | None) -> None:
    """Fail before any download with a reason a user can act on (network, unknown repo, gated without token).

    Skipped offline (HF_HUB_OFFLINE=1): the model must then be in the local cache, and loading says so if not.
    """
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return
    try:
        model_info(model_id, token=token, timeout=30)
    except GatedRepoError as exc:
        raise ModelError(f"{model_id} is gated: accept its licence on huggingface.co and set KTOFORGE_HF_TOKEN "
                         "to a token of that account") from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"{model_id} is not on the Hugging Face hub (or is private and KTOFORGE_HF_TOKEN "
                         "has no access to it)") from exc
    except Exception as exc:  # no network, DNS, proxy, hub down: all mean the same to the user
        raise ModelError(f"cannot reach the Hugging Face hub for {model_id} ({type(exc).__name__}: {exc}); "
                         "check the worker's network, or pre-fill its HF cache and set HF_HUB_OFFLINE=1") from exc


def tokenizer_dir(model: str, cache_dir: Path) -> Path | None:
    """A local folder with the model's tokenizer, or None where only the hub has it (no download here)."""
    kind = check_model(model)
    return None if kind == "hub" else Path(resolve(model, cache_dir))

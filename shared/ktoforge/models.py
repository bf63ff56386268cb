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


def tokenizer_dir(model: str, cache_dir: Path) -> Path | None:
    """A local folder with the model's tokenizer, or None where only the hub has it (no download here)."""
    kind = check_model(model)
    return None if kind == "hub" else Path(resolve(model, cache_dir))

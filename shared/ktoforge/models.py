"""What a job's ``model`` string names: a builtin model, a local directory or a Hugging Face hub id, and
only where the operator allows.

Checked by the API when a job is submitted (so a typo fails at once, not after a queue wait) and resolved
by the workers when they load it. No torch here: the API and the Mac worker use this module.

A local folder must resolve inside the model cache dir or one of KTOFORGE_MODEL_ROOTS: a job may not make a
worker read (and publish as artifacts the tokenizer files of) any folder that happens to hold a config.json.
Every refused local path gets one text, so the answer tells nothing of what exists on the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ktoforge.builtin_model import BUILTINS, builtin_path, is_builtin
from ktoforge.settings import Settings, get_settings

# fullmatch only: with match, "$" also matches before a trailing newline ("a/b\n" passed).
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
LOCAL_REFUSED = ("a local model must be a Hugging Face model folder (with config.json) inside the model cache "
                 "dir or a folder of KTOFORGE_MODEL_ROOTS; this path is not one")
GB = 10**9  # the hub shows sizes in decimal GB


class ModelError(ValueError):
    """The model string names nothing we can (or may) load."""


def allowed_roots(settings: Settings) -> list[Path]:
    """Resolved folders local models may come from: the model cache dir, then KTOFORGE_MODEL_ROOTS."""
    return [Path(root).expanduser().resolve() for root in (settings.model_cache_dir, *settings.model_roots)]


def local_model_dir(model: str, settings: Settings) -> Path:
    """The resolved folder of a local model, or ModelError with the same text whatever the reason."""
    try:
        path = Path(model).expanduser().resolve()  # symlinks, "..", /proc/self/cwd all followed first
        inside = any(path.is_relative_to(root) for root in allowed_roots(settings))
        if inside and (path / "config.json").is_file():
            return path
    except (OSError, RuntimeError, ValueError):  # a loop of symlinks, a NUL byte: refused like the rest
        pass
    raise ModelError(LOCAL_REFUSED)


def check_model(model: str, settings: Settings | None = None) -> str:
    """'builtin', 'local' or 'hub'; ModelError for anything else, or anything the operator does not allow."""
    settings = settings or get_settings()
    if is_builtin(model):
        if model not in BUILTINS:
            raise ModelError(f"unknown builtin model {model!r}; available: {', '.join(BUILTINS)}")
        return "builtin"
    if model.startswith(("/", ".", "~")):
        local_model_dir(model, settings)
        return "local"
    if HUB_ID.fullmatch(model):
        check_hub_org(model, settings)
        return "hub"
    raise ModelError(f"{model!r} is neither {', '.join(BUILTINS)}, a local model folder, nor a hub id like "
                     "mistralai/Mistral-7B-Instruct-v0.3")


def check_hub_org(model_id: str, settings: Settings) -> None:
    """With KTOFORGE_HUB_ALLOWED_ORGS set, only those organisations (the hub ignores case in names)."""
    allowed = {org.casefold() for org in settings.hub_allowed_orgs}
    org = model_id.split("/", 1)[0]
    if allowed and org.casefold() not in allowed:
        raise ModelError(f"hub models from {org!r} are not allowed here; KTOFORGE_HUB_ALLOWED_ORGS lists "
                         f"{', '.join(sorted(settings.hub_allowed_orgs))}")


def resolve(model: str, cache_dir: Path, settings: Settings | None = None) -> str:
    """A path or hub id that transformers, Unsloth and mlx-lm accept (builtin models are generated here)."""
    settings = settings or get_settings()
    kind = check_model(model, settings)
    if kind == "builtin":
        return str(builtin_path(model, cache_dir))
    if kind == "local":
        return str(local_model_dir(model, settings))
    return model


def check_hub_access(model_id: str, token: str | None, settings: Settings | None = None) -> None:
    """Fail before any download with a reason a user can act on (network, unknown repo, gated without token,
    over the size cap).

    Skipped offline (HF_HUB_OFFLINE=1): the model must then be in the local cache, and loading says so if not.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    settings = settings or get_settings()
    check_hub_org(model_id, settings)
    if constants.HF_HUB_OFFLINE:
        return
    try:
        info = huggingface_hub.model_info(model_id, token=token, timeout=30, files_metadata=True)
    except GatedRepoError as exc:
        raise ModelError(f"{model_id} is gated: accept its licence on huggingface.co and set KTOFORGE_HF_TOKEN "
                         "to a token of that account") from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"{model_id} is not on the Hugging Face hub (or is private and KTOFORGE_HF_TOKEN "
                         "has no access to it)") from exc
    except Exception as exc:  # no network, DNS, proxy, hub down: all mean the same to the user
        raise ModelError(f"cannot reach the Hugging Face hub for {model_id} ({type(exc).__name__}: {exc}); "
                         "check the worker's network, or pre-fill its HF cache and set HF_HUB_OFFLINE=1") from exc
    check_hub_size(model_id, info.siblings or [], settings.hub_max_model_gb)


def download_bytes(siblings: Iterable[Any]) -> int:
    """Bytes of the weights a load fetches: transformers and mlx-lm read ``model*.safetensors`` (else
    ``pytorch_model*.bin``), not the ``consolidated.*`` copy or GGUF files a repo may also hold. A repo in
    neither layout counts every file, so an unknown layout cannot slip under the cap."""
    files = [(s.rfilename, s.size or 0) for s in siblings]
    for pattern in (r"model.*\.safetensors", r"pytorch_model.*\.bin"):
        weights = [size for name, size in files if re.fullmatch(pattern, name.rsplit("/", 1)[-1])]
        if weights:
            return sum(weights)
    return sum(size for _, size in files)


def check_hub_size(model_id: str, siblings: Iterable[Any], max_gb: float) -> None:
    """ModelError when the weights exceed KTOFORGE_HUB_MAX_MODEL_GB (0: no cap)."""
    size = download_bytes(siblings)
    if max_gb and size > max_gb * GB:
        raise ModelError(f"{model_id} has {size / GB:.1f} GB of weights, over KTOFORGE_HUB_MAX_MODEL_GB="
                         f"{max_gb:g}; nothing was downloaded")


@dataclass(frozen=True)
class ModelSource:
    """A job's model as the lifecycle resolved it for a backend: allowed, reachable, and where it lies."""

    name: str  # as the job names it
    kind: str  # 'builtin', 'local' or 'hub'
    ref: str  # what transformers, Unsloth and mlx-lm load: a local folder, or the hub id
    token: str | None = None  # KTOFORGE_HF_TOKEN, for a hub model

    def local_dir(self, allow_patterns: list[str] | None = None) -> Path:
        """A folder with the model's files: a hub model is fetched (``allow_patterns`` of it) into the HF cache
        with the worker's token, so a backend that reads files (mlx-lm, tokenizer files) gets gated models too."""
        if self.kind != "hub":
            return Path(self.ref)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.ref, token=self.token, allow_patterns=allow_patterns))


def model_source(model: str, settings: Settings) -> ModelSource:
    """Check and resolve a job's model for either backend: a hub model's access (gated, missing, no network,
    over the size cap) is checked with KTOFORGE_HF_TOKEN before anything is downloaded; builtins are generated."""
    token = settings.hf_token.get_secret_value() or None
    kind = check_model(model, settings)
    if kind == "hub":
        check_hub_access(model, token, settings)
    return ModelSource(model, kind, resolve(model, settings.model_cache_dir, settings), token)


def tokenizer_dir(model: str, cache_dir: Path, settings: Settings | None = None) -> Path | None:
    """A local folder with the model's tokenizer, or None where only the hub has it (no download here)."""
    kind = check_model(model, settings)
    return None if kind == "hub" else Path(resolve(model, cache_dir, settings))

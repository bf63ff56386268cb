"""Write `.env` from `.env.example` with fresh secrets: `ktoforge init`, and `make env` before any install.

Standard library only, and runnable as a script (`python3 shared/ktoforge/envfile.py`), so a Docker host
writes its `.env` without the project's virtual environment. Every `change-me…` token of the example is
replaced by one fresh random secret wherever it appears, so a secret repeated inside another value (the Redis
password inside KTOFORGE_REDIS_URL) stays consistent; new secret lines anyone adds are covered the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PLACEHOLDER = re.compile(r"change-me[A-Za-z0-9_.~-]*")  # the characters a URL keeps unescaped
PROFILES = re.compile(r"^#?\s*COMPOSE_PROFILES=.*$", flags=re.M)
REPO_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
SECRET_BYTES = 32  # token_urlsafe(32): 43 characters of [A-Za-z0-9_-], safe in URLs, .env and compose


def gpu_present() -> bool:
    """An NVIDIA GPU is usable when `nvidia-smi -L` lists one (compose's `cuda` profile needs it)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and any(line.startswith("GPU ") for line in listed.stdout.splitlines())


def render_env(example: str, gpu: bool, new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(SECRET_BYTES)
               ) -> str:
    """The example's text with each distinct placeholder replaced by its own fresh secret, on assignment lines
    only (comments keep the placeholder names), and COMPOSE_PROFILES set for this host."""
    fresh: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        return fresh.setdefault(match.group(0), new_secret())

    lines = [line if line.lstrip().startswith("#") else PLACEHOLDER.sub(replace, line)
             for line in example.splitlines(keepends=True)]
    text = "".join(lines)
    profiles = f"COMPOSE_PROFILES={'cuda' if gpu else ''}"
    if PROFILES.search(text):
        return PROFILES.sub(profiles, text, count=1)
    return text + ("" if text.endswith("\n") or not text else "\n") + profiles + "\n"


def write_env(path: Path, example: Path, force: bool, gpu: bool | None) -> bool:
    """Write ``path`` (mode 0600, atomically); refuses an existing file unless ``force``. Returns ``gpu``."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists: keep it, or pass --force to replace it (its secrets are lost)")
    gpu = gpu_present() if gpu is None else gpu
    text = render_env(example.read_text(), gpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return gpu


def default_example(path: Path) -> Path:
    """The `.env.example` beside the target, else the repository's own."""
    beside = path.parent / ".env.example"
    return beside if beside.exists() else REPO_EXAMPLE


def init(path: Path, force: bool, gpu: bool | None, example: Path | None = None) -> int:
    """Shared by `ktoforge init` and the script: prints what was written, returns the exit status."""
    try:
        used_gpu = write_env(path, example or default_example(path), force, gpu)
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"[ktoforge] {exc}", file=sys.stderr)
        return 1
    profile = "cuda (NVIDIA GPU found: compose also runs worker-cuda)" if used_gpu else "none (no NVIDIA GPU)"
    print(f"[ktoforge] wrote {path} (mode 0600) with fresh secrets; COMPOSE_PROFILES: {profile}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="envfile.py", description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path(".env"))
    parser.add_argument("--example", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--gpu", dest="gpu", action="store_true", default=None)
    parser.add_argument("--no-gpu", dest="gpu", action="store_false")
    args = parser.parse_args(argv)
    return init(args.path, args.force, args.gpu, args.example)


if __name__ == "__main__":
    sys.exit(main())

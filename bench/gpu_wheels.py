"""The wheels bench/gpu_check.py needs on a GPU machine that reaches no package index, into var/gpu-wheels/.

Everything the CUDA image's pip step resolves to (tests/worker_cuda/image.py reads it from the Dockerfile, so
the versions are the image's: Unsloth, unsloth_zoo, bitsandbytes, peft, trl, accelerate, datasets, transformers
and what they import, and the ktoforge packages' own dependencies) except what comes with the machine's torch
(torch, triton, the nvidia-*/cuda-* libraries) and xformers (built for an older torch; Unsloth then uses PyTorch's
attention). The GPU machine needs torch 2.13.0. Each wheel is checked against the sha256 PyPI lists.
Run here: .venv/bin/python bench/gpu_wheels.py [--python 3.12] [--out var/gpu-wheels]
Then there: pip install --no-deps var/gpu-wheels/*.whl && python bench/gpu_check.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import ssl
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.worker_cuda.image import resolve  # noqa: E402 (the image's pip step, resolved)

WITH_TORCH = ("torch", "triton", "xformers")
WITH_TORCH_PREFIXES = ("nvidia-", "cuda-")


def wanted(name: str) -> bool:
    return name not in WITH_TORCH and not name.startswith(WITH_TORCH_PREFIXES)


def download(url: str, sha256: str, out: Path) -> Path:
    """One wheel, written only once its hash matches; kept when already there and whole."""
    path = out / url.rsplit("/", 1)[1]
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    with urllib.request.urlopen(url, timeout=120, context=context) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"{url}: sha256 mismatch")
    path.write_bytes(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the GPU machine's Python (default: this one's)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "gpu-wheels")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = resolve(Path(tmp) / "report.json", python=args.python)
    total = 0
    for name, item in sorted(resolved.items()):
        if not wanted(name):
            continue
        info = item["download_info"]
        path = download(info["url"], info["archive_info"]["hashes"]["sha256"], args.out)
        total += path.stat().st_size
        print(f"{path.name}")
    print(f"gpu_wheels_mb {total / 2**20:.0f}")


if __name__ == "__main__":
    main()

"""The CUDA image's pip step, read from its Dockerfile and resolved against PyPI without installing anything.

Used by tests/worker_cuda/test_image.py (is the image right?) and bench/gpu_wheels.py (which wheels a GPU
machine without a package index needs): both resolve exactly the step the Dockerfile runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "services" / "worker-cuda" / "Dockerfile"
INDEX = "https://pypi.org/simple"
UBUNTU_PYTHON = {"24.04": "3.12", "22.04": "3.10"}  # the python3 each Ubuntu release ships
# The image's glibc (Ubuntu 24.04: 2.39) accepts every manylinux tag up to its own; pip needs them listed.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64",
                                                                               "linux_x86_64"]


def norm(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def logical_lines(dockerfile: Path = DOCKERFILE) -> list[str]:
    """Dockerfile instructions with their continuation lines joined, comments dropped."""
    return [line.strip() for line in dockerfile.read_text().replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def pip_step() -> list[str]:
    """The arguments of the Dockerfile's one `pip install` of requirements/cuda.txt."""
    steps = [line for line in logical_lines() if line.startswith("RUN ") and "requirements/cuda.txt" in line]
    assert len(steps) == 1, steps
    command = shlex.split(steps[0][4:].split("&&")[0])
    assert command[:2] == ["pip", "install"], command
    return command[2:]


def base_image() -> tuple[str, str]:
    """(CUDA major.minor, Ubuntu release) of the FROM line."""
    (line,) = [line for line in logical_lines() if line.startswith("FROM ")]
    found = re.fullmatch(r"FROM nvidia/cuda:(\d+\.\d+)\.\d+-[a-z-]+-ubuntu(\d+\.\d+)", line)
    assert found, line
    return found.group(1), found.group(2)


def index_unreachable() -> str | None:
    """Why PyPI cannot be reached at all, or None when it answers (any HTTP status, any TLS outcome)."""
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        urllib.request.urlopen(f"{INDEX}/torch/", timeout=20, context=context).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None  # reachable: pip reports the TLS problem, and that is a failure, not a skip
        return f"{INDEX} unreachable: {exc.reason}"
    except (TimeoutError, ConnectionError) as exc:
        return f"{INDEX} unreachable: {exc}"
    return None


def resolve(report: Path, python: str | None = None) -> dict[str, dict]:
    """pip's install report for the image's pip step (PyPI only, the image's Python on x86_64 Linux), by name.

    This machine's pip configuration (local indexes, caps) is not the image's, so none of it applies; a
    PIP_CERT (a TLS-intercepting proxy) does. Wheels only: pip cannot build for another platform.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    args = [*pip_step(), "--dry-run", "--ignore-installed", "--report", str(report), "--quiet",
            "--index-url", INDEX, "--python-version", python or UBUNTU_PYTHON[base_image()[1]],
            "--implementation", "cp", "--only-binary=:all:", *[f"--platform={p}" for p in PLATFORMS]]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"pip could not resolve the CUDA image's step:\n{proc.stderr[-4000:]}")
    return {norm(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]}

"""Whether this worker may train on the CPU: a worker meant for a GPU fails a job at once without one.

A CUDA build of torch that cannot reach a GPU says only ``torch.cuda.is_available() == False``: the host's
driver is older than the build's CUDA needs, or the container was started without the NVIDIA runtime. Left
alone, the job would then load a 7B model in fp32 on the CPU (~29 GB) and crawl or be killed. With
``KTOFORGE_REQUIRE_GPU`` (compose sets it for the CUDA worker) the job fails in seconds with a reason naming
the driver and runtime instead; local mode leaves it off and keeps its CPU fallback.
"""

from __future__ import annotations

import re
from pathlib import Path

from ktoforge.settings import Settings

# The oldest NVIDIA driver each CUDA major version runs on (CUDA minor-version compatibility: any 13.x build
# runs on a >= 580 driver). The image's torch is PyPI's 2.13.0, a CUDA 13.0 build.
MIN_DRIVER = {"13": "580", "12": "525"}
DRIVER_FILE = Path("/proc/driver/nvidia/version")


class GPUUnavailable(RuntimeError):
    """This worker must train on a GPU and sees none."""


def driver_version(version_file: Path = DRIVER_FILE) -> str | None:
    """The loaded NVIDIA kernel module's version, or None where no driver is visible (none, or no runtime)."""
    try:
        text = version_file.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for \w+)?\s+(\d+(?:\.\d+)+)", text)
    return found.group(1) if found else None


def no_gpu_reason(torch_version: str, cuda: str | None, torch_says: str, driver: str | None) -> str:
    """What a user reads: what torch saw, what its build needs, what the host has, and what to check."""
    if cuda is None:
        return (f"KTOFORGE_REQUIRE_GPU is true but torch {torch_version} is a CPU-only build; install the CUDA "
                "build (services/worker-cuda/Dockerfile), or set KTOFORGE_REQUIRE_GPU=false to train on the CPU")
    need = MIN_DRIVER.get(cuda.split(".")[0], "?")
    host = f"NVIDIA driver {driver}" if driver else "no NVIDIA driver visible to this process"
    return (f"KTOFORGE_REQUIRE_GPU is true but torch sees no CUDA device ({torch_says}). torch {torch_version} "
            f"is built for CUDA {cuda}, which needs an NVIDIA driver >= {need}; found: {host}. Check `nvidia-smi` "
            "on the host and update its driver if older; in Docker, install the NVIDIA Container Toolkit and start "
            "the worker with the GPU (compose profile cuda, which reserves it through the nvidia runtime). "
            "Set KTOFORGE_REQUIRE_GPU=false to train on the CPU on purpose.")


def require_gpu(settings: Settings) -> None:
    """GPUUnavailable when the settings ask for a GPU and torch has none (first thing a job does)."""
    if not settings.require_gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    try:
        torch.cuda.init()  # its error is the most precise reason torch has (driver too old, no driver, ...)
        torch_says = "torch.cuda.is_available() is False"
    except Exception as exc:
        torch_says = f"{type(exc).__name__}: {exc}".strip()
    raise GPUUnavailable(no_gpu_reason(torch.__version__, torch.version.cuda, torch_says, driver_version()))

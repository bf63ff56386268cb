"""What a worker trains on, as its presence heartbeat advertises it: GPU, Apple chip, or CPU and RAM.

The API compares a job's memory estimate with these figures at submit (``GET /v1/workers`` shows them).
Read without torch or mlx: the torch worker's Celery parent must never create a CUDA context (its forked
children would inherit a broken one), and the API imports this module too. So: ``nvidia-smi`` for NVIDIA
GPUs, ``sysctl`` on a Mac, /proc/meminfo (or psutil) elsewhere. Every probe is bounded and failure-safe:
a missing tool means "not that kind of device", never a worker that cannot start.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

GB = 10**9
PROBE_TIMEOUT_S = 5.0
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,memory.free,driver_version",
                "--format=csv,noheader,nounits"]


def _run(argv: list[str]) -> str | None:
    """Output of a probe command, or None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def nvidia_gpu() -> dict[str, Any] | None:
    """The first NVIDIA GPU (the worker trains on one): name, total and free memory (GB), driver."""
    out = _run(NVIDIA_QUERY)
    if not out:
        return None
    try:
        name, total_mib, free_mib, driver = (part.strip() for part in out.splitlines()[0].split(","))
        return {"kind": "cuda", "name": name, "memory_total_gb": round(float(total_mib) * 2**20 / GB, 2),
                "memory_free_gb": round(float(free_mib) * 2**20 / GB, 2), "driver": driver}
    except ValueError:  # a format we do not know: better no GPU figure than a wrong one
        return None


def ram() -> tuple[float, float]:
    """(total, available) system memory in GB: psutil where installed, else /proc/meminfo."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return round(memory.total / GB, 2), round(memory.available / GB, 2)
    except ImportError:
        fields = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields[key] = int(value.split()[0]) * 1024
        return round(fields["MemTotal"] / GB, 2), round(fields.get("MemAvailable", 0) / GB, 2)


def apple_chip() -> dict[str, Any] | None:
    """Apple silicon: the chip's name and its unified memory (shared by CPU and GPU, so that is the budget)."""
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    chip = _run(["sysctl", "-n", "machdep.cpu.brand_string"]) or "Apple silicon"
    total, available = ram()
    return {"kind": "apple", "name": chip, "memory_total_gb": total, "memory_free_gb": available}


def cpu_name() -> str:
    """The processor's model name where the OS says it, else the architecture."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """This machine's training device, plus its RAM (a CPU-only job and the Mac count against that)."""
    total, available = ram()
    device = nvidia_gpu() or apple_chip() or {"kind": "cpu", "name": f"{cpu_name()} ({os.cpu_count()} threads)",
                                              "memory_total_gb": total, "memory_free_gb": available}
    return {**device, "ram_total_gb": total, "ram_free_gb": available}


def presence_info() -> dict[str, Any]:
    """What queue.py's presence heartbeat adds to each announcement: ``{"device": describe()}``."""
    return {"device": describe()}

"""No silent CPU run of a GPU job: KTOFORGE_REQUIRE_GPU and no CUDA device fail the job at once (issue 9).

This machine has no GPU (and a CPU-only torch), so a worker meant for one must refuse; local mode (the
default, false) keeps training on the CPU (tests/shared/test_lifecycle.py trains a job that way).
"""

from __future__ import annotations

import time

import pytest

from ktoforge.lifecycle import run_job
from ktoforge.schemas import JobStatus
from ktoforge.settings import Settings, get_settings
from ktoforge_worker.gpu import driver_version, no_gpu_reason


def test_a_gpu_worker_without_a_gpu_fails_the_job_within_seconds_naming_driver_and_runtime(new_job, monkeypatch):
    from ktoforge_worker.train import train

    monkeypatch.setenv("KTOFORGE_REQUIRE_GPU", "true")
    get_settings.cache_clear()
    store, make = new_job
    job_id = make()
    started = time.monotonic()
    run_job(job_id, "cuda", train, worker="cuda@no-gpu")
    elapsed = time.monotonic() - started
    job = store.get(job_id)
    assert job.status == JobStatus.failed and elapsed < 15, (job.status, elapsed)
    assert job.reason.startswith("GPUUnavailable: KTOFORGE_REQUIRE_GPU is true but torch")
    assert "KTOFORGE_REQUIRE_GPU=false" in job.reason
    assert job.step is None  # nothing trained
    import torch

    if torch.version.cuda is None:  # this machine: the CPU wheel
        assert f"torch {torch.__version__} is a CPU-only build" in job.reason


def test_the_reason_for_a_cuda_build_names_its_cuda_the_minimum_driver_and_the_container_runtime():
    reason = no_gpu_reason("2.13.0", "13.0", "RuntimeError: The NVIDIA driver on your system is too old "
                           "(found version 12080)", "570.124.06")
    assert "built for CUDA 13.0, which needs an NVIDIA driver >= 580; found: NVIDIA driver 570.124.06" in reason
    assert "driver on your system is too old" in reason
    assert "NVIDIA Container Toolkit" in reason and "nvidia runtime" in reason
    without = no_gpu_reason("2.13.0", "13.0", "RuntimeError: Found no NVIDIA driver on your system", None)
    assert "found: no NVIDIA driver visible to this process" in without


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:53 UTC 2025\n", "580.65.06"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build\n", "570.124.06"),
    ("garbage\n", None),
])
def test_driver_version_is_read_from_the_kernel_module(tmp_path, text, version):
    path = tmp_path / "version"
    path.write_text(text)
    assert driver_version(path) == version
    assert driver_version(tmp_path / "absent") is None


def test_local_mode_keeps_the_cpu_fallback_by_default(monkeypatch):
    monkeypatch.delenv("KTOFORGE_REQUIRE_GPU", raising=False)
    assert Settings(_env_file=None).require_gpu is False

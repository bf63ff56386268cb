"""The CUDA image is right by construction (issue 9): its pip step, resolved against PyPI, gives the pinned torch
CUDA build, Unsloth and the worker's pins; the base image, the build's assertion and the Python agree.

The image cannot be built here (no registry for nvidia/cuda, no GPU), so the test resolves the Dockerfile's
own pip step, read from the Dockerfile (same requirement files, same constraint files), with
``pip install --dry-run --report`` for the image's Python and platform. Skipped only when the index cannot be
reached at all (no route, DNS, refused, timeout); a TLS or HTTP error is a failure.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tests.worker_cuda.image import (DOCKERFILE, UBUNTU_PYTHON, base_image, index_unreachable, logical_lines,
                                     norm, resolve)

WORKER_PINS = {"torch": "2.13.0", "unsloth": "2026.10.9", "unsloth-zoo": "2026.10.9", "trl": "1.14.2",
               "transformers": "5.17.0", "peft": "0.21.2", "datasets": "4.8.5", "accelerate": "1.15.0"}


def test_the_dockerfile_asserts_the_cuda_of_its_base_and_runs_as_a_fixed_non_root_user():
    cuda, _ = base_image()
    text = DOCKERFILE.read_text()
    assert f"(torch.__version__, torch.version.cuda) == ('{WORKER_PINS['torch']}', '{cuda}')" in text
    users = [line.split()[1] for line in logical_lines() if line.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert f"torch=={WORKER_PINS['torch']}\n" in (ROOT / "requirements" / "cuda.txt").read_text()


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    reason = index_unreachable()
    if reason:
        pytest.skip(reason)
    return resolve(tmp_path_factory.mktemp("pip") / "report.json")


def test_pip_picks_the_cuda_13_torch_and_the_worker_pins(resolved):
    cuda, ubuntu = base_image()
    versions = {name: item["metadata"]["version"] for name, item in resolved.items()}
    assert {name: versions.get(name) for name in WORKER_PINS} == WORKER_PINS
    torch = resolved["torch"]
    wheel = torch["download_info"]["url"].rsplit("/", 1)[1]
    py = "cp" + UBUNTU_PYTHON[ubuntu].replace(".", "")
    assert re.fullmatch(rf"torch-2\.13\.0-{py}-{py}-manylinux_\d+_\d+_x86_64\.whl", wheel), wheel
    needs = [req for req in torch["metadata"]["requires_dist"] if req.startswith("cuda-toolkit")]
    assert needs and f"=={cuda}." in needs[0], needs  # the build's own CUDA is the base image's
    assert versions["cuda-toolkit"].startswith(f"{cuda}.")
    assert "nvidia-cudnn-cu13" in versions and not [n for n in versions if n.endswith("-cu12")]


def test_everything_the_image_installs_is_pinned(resolved):
    pins: dict[str, str] = {}
    for name in ("constraints.txt", "cuda-constraints.txt", "cuda.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^\s;#]+).*", line.strip())
            if found:
                pins[norm(found.group(1))] = found.group(2)
    unpinned = sorted(f"{item['metadata']['name']}=={item['metadata']['version']}"
                      for name, item in resolved.items() if pins.get(name) != item["metadata"]["version"])
    assert not unpinned, "pin these in requirements/cuda-constraints.txt:\n" + "\n".join(unpinned)

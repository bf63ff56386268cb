"""Will it fit, asked of a running local mode: a CPU worker on the cuda queue advertises its device, a 7B
model is refused at submit with the figures (and nothing is downloaded), the builtin model is accepted."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.shared.cli.conftest import KTOFORGE, cli_env
from tests.conftest import ROOT
from tests.system import System, upload

pytestmark = pytest.mark.slow
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"


def run(system: System, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KTOFORGE, *args], capture_output=True, text=True, env=cli_env(system.url), timeout=120)


def test_workers_shows_the_cpu_worker_of_the_cuda_queue(system: System) -> None:
    listing = json.loads(run(system, "workers", "--json").stdout)
    (worker,) = listing["queues"]["cuda"]
    assert listing["queues"]["mlx"] == []
    device = worker["device"]
    assert device["kind"] == "cpu" and device["ram_total_gb"] > 1 and device["name"]
    table = run(system, "workers")
    assert table.returncode == 0 and worker["name"] in table.stdout and "GB" in table.stdout


def downloaded_anything(names: str) -> list[Path]:
    """Files or folders named like the model anywhere a worker or the hub client would put them."""
    roots = [ROOT / "var", Path.home() / ".cache" / "huggingface"]
    return [p for root in roots if root.exists() for p in root.rglob(names)]


def test_a_7b_model_is_refused_with_the_figures_and_nothing_is_downloaded(system: System, small: Path) -> None:
    before = downloaded_anything("*Mistral-7B*")
    with system.client() as c:
        dataset_id = upload(c, small)
        started = time.monotonic()
        r = c.post("/v1/jobs", json={"dataset_id": dataset_id, "model": MISTRAL})
        assert time.monotonic() - started < 5  # decided from the shape, not from a download
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["type"] == "does_not_fit" and error["loc"] == ["body", "model"]
        (worker,) = error["workers"]
        assert worker["estimate_gb"]["total"] > worker["memory_gb"] > 1  # fp32 on a CPU: ~30 GB of weights alone
        assert worker["estimate_gb"]["weights"] > 28
        assert f"{worker['memory_gb']} GB" in error["msg"]
        assert not [j for j in c.get("/v1/jobs").json()["items"] if j["model"] == MISTRAL]
    cli = run(system, "job", "submit", "--dataset", dataset_id, "--model", MISTRAL)
    assert cli.returncode == 1 and "does not fit" in cli.stderr and "GB" in cli.stderr, cli.stderr
    assert downloaded_anything("*Mistral-7B*") == before


def test_the_builtin_model_is_accepted_and_auto_picks_the_queue_with_the_worker(system: System, small: Path) -> None:
    with system.client() as c:
        dataset_id = upload(c, small)
        r = c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "auto", "hyperparameters": {"max_steps": 1}})
        assert r.status_code == 201, r.text
        assert r.json()["backend"] == "cuda" and r.json()["warnings"] == []
        forced = c.post("/v1/jobs", json={"dataset_id": dataset_id, "model": MISTRAL, "force": True})
        assert forced.status_code == 201 and forced.json()["warnings"][0].startswith("forced"), forced.text
        c.post(f"/v1/jobs/{forced.json()['id']}/cancel")

"""Job fixtures (imported by the conftest of each folder that runs jobs): a real JobContext (real job store and
files), and a real API process with a dataset."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ktoforge.jobs import JobStore
from ktoforge.lifecycle import JobContext
from ktoforge.schemas import JobCreate, JobStatus
from ktoforge.settings import get_settings
from tests.conftest import free_port, server_child


def subset(reference: Path, dest: Path, n: int, n_undesirable: int | None = None) -> Path:
    """The first n desirable and n (or n_undesirable) undesirable rows of the reference file."""
    pos, neg = [], []
    for line in reference.read_text().splitlines():
        (pos if '"label": true' in line else neg).append(line)
    dest.write_text("\n".join(pos[:n] + neg[:n if n_undesirable is None else n_undesirable]) + "\n")
    return dest


@pytest.fixture()
def make_ctx(kf_env, redis_client, reference_dataset, tmp_path):
    def make(n_rows: int = 8, lora: dict | None = None, n_undesirable: int | None = None, **hyper) -> JobContext:
        store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
        hp = {"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
              "max_length": 192, "save_steps": 2, "learning_rate": 1e-2, "gradient_checkpointing": False, **hyper}
        job, _ = store.create(JobCreate(dataset_id="0" * 64, hyperparameters=hp, lora=lora or {}))
        store.transition(job.id, JobStatus.running)
        root = tmp_path / "job"
        ctx = JobContext(store.get(job.id), store, get_settings(), subset(reference_dataset, tmp_path / "d.jsonl",
                         n_rows, n_undesirable), root / "output", root / "checkpoints")
        ctx.output_dir.mkdir(parents=True)
        ctx.checkpoint_dir.mkdir(parents=True)
        return ctx

    yield make
    shutil.rmtree(tmp_path / "job", ignore_errors=True)


USER = {"Authorization": "Bearer test-api-key"}


@pytest.fixture()
def api(kf_env, redis_client, monkeypatch, tmp_path) -> Iterator[str]:
    """A uvicorn API process on a free port; the worker settings point at it (a short lease for the tests, yet
    3 s: renewals every 0.5 s were seen 1.4 s apart on a loaded 2-core machine)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"KTOFORGE_API_URL": url, "KTOFORGE_LEASE_TTL_S": "3", "KTOFORGE_HEARTBEAT_INTERVAL_S": "0.5"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with server_child([sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", "127.0.0.1", "--port",
                       str(port)], f"{url}/healthz", tmp_path / "api.log", os.environ.copy()):
        yield url


@pytest.fixture()
def dataset_id(api, reference_dataset, tmp_path) -> str:
    """A small balanced dataset uploaded through the API."""
    path = subset(reference_dataset, tmp_path / "small.jsonl", 8)
    with path.open("rb") as fh:
        r = httpx.post(f"{api}/v1/datasets", headers=USER, files={"file": ("small.jsonl", fh, "application/jsonl")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture()
def new_job(dataset_id):
    """(store, make): make creates a queued job on the uploaded dataset (not enqueued: the test runs it)."""
    store = JobStore.from_url(get_settings().redis_url)

    def make(model: str = "builtin:tiny-mistral", **hyper) -> str:
        hp = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
              "save_steps": 10, "gradient_checkpointing": False, **hyper}
        job, _ = store.create(JobCreate(dataset_id=dataset_id, model=model, hyperparameters=hp))
        return job.id

    return store, make

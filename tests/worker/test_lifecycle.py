"""The shared job run (lease, state changes, dataset in, artifacts out) against a real API process and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ktoforge.jobs import JobStore
from ktoforge.lifecycle import JobContext, run_job
from ktoforge.schemas import JobCreate, JobStatus
from ktoforge.settings import get_settings
from tests.conftest import free_port
from tests.worker.conftest import subset

USER = {"Authorization": "Bearer test-api-key"}


@pytest.fixture()
def api(kf_env, redis_client, monkeypatch, tmp_path) -> Iterator[str]:
    """A uvicorn API process on a free port; the worker settings point at it (short lease for the tests)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for key, value in {"KTOFORGE_API_URL": url, "KTOFORGE_LEASE_TTL_S": "1", "KTOFORGE_HEARTBEAT_INTERVAL_S": "0.2"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", "127.0.0.1",
                             "--port", str(port)], env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "api.log").read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def new_job(api, reference_dataset, tmp_path):
    """Upload a small dataset through the API and create a queued job on it (not enqueued: we run it here)."""
    path = subset(reference_dataset, tmp_path / "small.jsonl", 8)
    with path.open("rb") as fh:
        r = httpx.post(f"{api}/v1/datasets", headers=USER, files={"file": ("small.jsonl", fh, "application/jsonl")})
    assert r.status_code == 201, r.text
    store = JobStore.from_url(get_settings().redis_url)

    def make(**hyper) -> str:
        hp = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
              "save_steps": 10, "gradient_checkpointing": False, **hyper}
        job, _ = store.create(JobCreate(dataset_id=r.json()["id"], hyperparameters=hp))
        return job.id

    return store, make


class Recorder:
    """A train function that records its calls and writes one output file (or raises what it is given)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[JobContext] = []
        self.error = error

    def __call__(self, ctx: JobContext) -> None:
        self.calls.append(ctx)
        ctx.report({"loss": 0.5, "step": 1, "max_steps": 1})
        if self.error:
            raise self.error
        (ctx.output_dir / "result.txt").write_text("trained")


def test_real_torch_run_uploads_the_adapter_and_succeeds(new_job, api):
    from ktoforge_worker.train import train

    store, make = new_job
    job_id = make()
    run_job(job_id, "cuda", train, worker="cuda@test")
    job = store.get(job_id)
    assert job.status == JobStatus.succeeded, job.reason
    assert (job.step, job.max_steps, job.worker) == (2, 2, "cuda@test")
    artifacts = Path(get_settings().data_dir) / "artifacts" / job_id
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.jsonl", "job_config.json"} <= {
        p.name for p in artifacts.iterdir()}
    states = [e.data["status"] for e in store.events(job_id, None, 100) if e.type == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert store.lease_holder(job_id) is None


def test_a_job_cancelled_while_queued_is_not_trained(new_job):
    store, make = new_job
    job_id = make()
    store.request_cancel(job_id)
    assert store.get(job_id).status == JobStatus.cancelled
    train = Recorder()
    run_job(job_id, "cuda", train)
    assert train.calls == [] and store.get(job_id).status == JobStatus.cancelled


def test_a_lease_held_by_a_live_worker_means_no_training(new_job):
    store, make = new_job
    job_id = make()
    assert store.acquire_lease(job_id, "other-host:1:abc", 60)
    train = Recorder()
    started = time.time()
    run_job(job_id, "cuda", train)  # a duplicate delivery: gives up after waiting 2 lease TTLs
    assert train.calls == [] and time.time() - started < 10
    assert store.get(job_id).status == JobStatus.queued
    assert store.lease_holder(job_id) == "other-host:1:abc"


def test_a_running_job_whose_worker_died_is_resumed(new_job):
    store, make = new_job
    job_id = make()
    store.transition(job_id, JobStatus.running, worker="dead-worker")
    train = Recorder()
    run_job(job_id, "cuda", train, worker="new-worker")
    job = store.get(job_id)
    assert len(train.calls) == 1 and job.status == JobStatus.succeeded
    assert (job.attempts, job.worker) == (2, "new-worker")
    logs = [e.data["message"] for e in store.events(job_id, None, 100) if e.type == "log"]
    assert "resuming after worker loss" in logs
    assert (Path(get_settings().data_dir) / "artifacts" / job_id / "result.txt").read_text() == "trained"


def test_a_training_error_fails_the_job_with_its_reason(new_job):
    store, make = new_job
    job_id = make()
    run_job(job_id, "cuda", Recorder(ValueError("max_length 8 is shorter than every prompt")))
    job = store.get(job_id)
    assert job.status == JobStatus.failed
    assert job.reason == "ValueError: max_length 8 is shorter than every prompt"
    assert store.lease_holder(job_id) is None


def test_cancel_during_training_ends_cancelled_without_artifacts(new_job):
    store, make = new_job
    job_id = make()

    def train(ctx: JobContext) -> None:
        store.request_cancel(job_id)
        assert ctx.should_stop()
        (ctx.output_dir / "partial.txt").write_text("x")

    run_job(job_id, "cuda", train)
    assert store.get(job_id).status == JobStatus.cancelled
    assert not (Path(get_settings().data_dir) / "artifacts" / job_id).exists()

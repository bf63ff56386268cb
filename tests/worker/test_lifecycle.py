"""The shared job run (lease, state changes, dataset in, artifacts out) against a real API process and Redis."""

from __future__ import annotations

import time
from pathlib import Path

from ktoforge.lifecycle import JobContext, run_job
from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings


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


def test_a_training_error_fails_the_job_with_its_reason_and_no_secret(new_job):
    store, make = new_job
    job_id = make()
    run_job(job_id, "cuda", Recorder(ValueError("max_length 8 is too short (token test-worker-token)")))
    job = store.get(job_id)
    assert job.status == JobStatus.failed
    assert job.reason == "ValueError: max_length 8 is too short (token ***)"
    assert store.lease_holder(job_id) is None


def test_an_unreachable_hub_model_fails_before_loading(new_job):
    from ktoforge_worker.train import train

    store, make = new_job
    job_id = make(model="ktoforge-tests/no-such-model")
    run_job(job_id, "cuda", train)
    job = store.get(job_id)
    assert job.status == JobStatus.failed and job.reason.startswith("ModelError: ")
    assert "ktoforge-tests/no-such-model" in job.reason


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


def test_the_heartbeat_keeps_the_lease_through_a_long_step(new_job):
    store, make = new_job
    job_id = make()
    seen: list[tuple[str | None, float | None]] = []

    def train(ctx: JobContext) -> None:
        time.sleep(3 * ctx.settings.lease_ttl_s)  # one slow step: longer than the lease lives unrenewed
        seen.append((store.lease_holder(job_id), store.heartbeat_age(job_id)))
        assert not ctx.should_stop()

    run_job(job_id, "cuda", train)
    (holder, age), = seen
    assert holder is not None and age is not None and age < 1
    assert store.get(job_id).status == JobStatus.succeeded and store.lease_holder(job_id) is None

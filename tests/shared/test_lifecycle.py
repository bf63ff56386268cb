"""The shared job run (lease, state changes, dataset in, artifacts out) against a real API process and Redis."""

from __future__ import annotations

import time
from pathlib import Path

from ktoforge.lifecycle import JobContext, run_job
from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings
from ktoforge.worker_client import WorkerClient


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


def test_a_job_resumed_on_a_worker_without_its_disk_gets_its_checkpoint_from_the_api(new_job, api, tmp_path):
    """The previous worker (another machine) uploaded checkpoint-3 and vanished; this worker's disk has none."""
    store, make = new_job
    job_id = make()
    store.transition(job_id, JobStatus.running, worker="gone-for-good")
    folder = tmp_path / "other-machine" / "checkpoint-3"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"global_step": 3}')
    assert store.acquire_lease(job_id, "gone-for-good:1:lease", 60)  # uploads come only from the lease holder
    WorkerClient(api, "test-worker-token", lease="gone-for-good:1:lease").upload_checkpoint(job_id, folder, 3)
    store.release_lease(job_id, "gone-for-good:1:lease")  # as if it had expired
    seen: list[str] = []

    def train(ctx: JobContext) -> None:
        seen.append((ctx.checkpoint_dir / "checkpoint-3" / "trainer_state.json").read_text())
        (ctx.output_dir / "result.txt").write_text("trained")

    run_job(job_id, "cuda", train, worker="new-worker")
    assert seen == ['{"global_step": 3}']
    assert store.get(job_id).status == JobStatus.succeeded
    logs = [e.data for e in store.events(job_id, None, 100) if e.type == "log"]
    assert {"message": "checkpoint fetched from the API", "step": 3} in logs
    assert WorkerClient(api, "test-worker-token").latest_checkpoint(job_id) is None  # done: deleted


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


def test_a_failed_checkpoint_upload_is_reported_and_training_goes_on(make_ctx, api):
    ctx = make_ctx()
    ctx.client = WorkerClient(api, "not-the-worker-token")  # refused at once (401), as any final API error
    folder = ctx.checkpoint_dir / "checkpoint-1"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    ctx.checkpoint_saved(folder, 1)  # does not raise: the local checkpoint is still good for a resume here
    (last,) = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "log"]
    assert (last["message"], last["step"], last["uploaded"]) == ("checkpoint saved", 1, False)
    assert "401" in last["error"] and "not-the-worker-token" not in last["error"]


def test_a_worker_that_lost_its_lease_uploads_no_checkpoint(make_ctx, api):
    """The new owner's checkpoint in the API is never replaced by the old owner's last save."""
    ctx = make_ctx()
    ctx.client = WorkerClient(api, "test-worker-token", lease="old-owner:1:lease")
    assert ctx.store.acquire_lease(ctx.job.id, "new-owner:2:lease", 60)  # another worker took the job
    ctx.lease_lost.set()
    folder = ctx.checkpoint_dir / "checkpoint-1"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    ctx.checkpoint_saved(folder, 1)
    (last,) = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "log"]
    assert (last["message"], last["uploaded"]) == ("checkpoint saved", False) and "lease lost" in last["error"]
    assert WorkerClient(api, "test-worker-token").latest_checkpoint(ctx.job.id) is None

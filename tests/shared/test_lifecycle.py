"""The shared job run (lease, state changes, dataset in, artifacts out) against a real API process and Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ktoforge.backend import Completed, Outcome, Stopped, StopReason
from ktoforge.lifecycle import JobContext, run_job
from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings
from ktoforge.worker_client import WorkerClient


class Recorder:
    """A backend's run that records its calls and writes one output file (or raises what it is given)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[JobContext] = []
        self.error = error

    def __call__(self, ctx: JobContext) -> Outcome:
        self.calls.append(ctx)
        ctx.report({"loss": 0.5, "step": 1, "max_steps": 1})
        if self.error:
            raise self.error
        (ctx.output_dir / "result.txt").write_text("trained")
        return ctx.outcome(1)


def job_folder(job_id: str) -> Path:
    return Path(get_settings().work_dir) / "jobs" / job_id


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
    assert not job_folder(job_id).exists()  # its artifacts are in the API: the worker's disk keeps nothing


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

    def train(ctx: JobContext) -> Outcome:
        seen.append((ctx.checkpoint_dir / "checkpoint-3" / "trainer_state.json").read_text())
        (ctx.output_dir / "result.txt").write_text("trained")
        return ctx.outcome(3)

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
    assert (job_folder(job_id) / "output" / "metrics.jsonl").is_file()  # kept, for diagnosis


def test_a_run_that_returns_no_outcome_fails_the_job(new_job):
    """Flags are not an answer: a backend says how its run ended, or the job fails saying it did not."""
    store, make = new_job
    job_id = make()
    run_job(job_id, "cuda", lambda ctx: None)
    job = store.get(job_id)
    assert job.status == JobStatus.failed and job.reason == "TypeError: the backend's run returned None, not an Outcome"


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

    def train(ctx: JobContext) -> Outcome:
        store.request_cancel(job_id)
        assert ctx.should_stop()
        (ctx.output_dir / "partial.txt").write_text("x")
        return ctx.outcome(7)

    run_job(job_id, "cuda", train)
    job = store.get(job_id)
    assert (job.status, job.reason) == (JobStatus.cancelled, "cancelled by user at step 7")
    assert not (Path(get_settings().data_dir) / "artifacts" / job_id).exists()
    assert not job_folder(job_id).exists()  # a cancelled job never resumes: nothing of it is worth keeping


def test_the_outcome_is_what_the_loop_was_told_not_a_flag_read_afterwards(make_ctx):
    ctx = make_ctx()
    assert ctx.outcome(3) == Completed(3)
    ctx.store.request_cancel(ctx.job.id)
    assert ctx.outcome(3) == Completed(3)  # the loop finished before it asked again: the run is complete
    assert ctx.should_stop() and ctx.outcome(3) == Stopped(3, StopReason.cancelled)
    ctx.lease_lost.set()
    assert ctx.should_stop() and ctx.outcome(4) == Stopped(4, StopReason.cancelled)  # the first stop seen


def test_the_heartbeat_keeps_the_lease_through_a_long_step(new_job):
    store, make = new_job
    job_id = make()
    seen: list[tuple[str | None, float | None]] = []

    def train(ctx: JobContext) -> Outcome:
        time.sleep(3 * ctx.settings.lease_ttl_s)  # one slow step: longer than the lease lives unrenewed
        seen.append((store.lease_holder(job_id), store.heartbeat_age(job_id)))
        assert not ctx.should_stop()
        return ctx.outcome(1)

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


def test_a_worker_that_lost_its_lease_keeps_and_uploads_no_checkpoint(make_ctx, api):
    """The new owner's checkpoint in the API is never replaced by the old owner's last save, and the old owner's
    save does not stay on a disk the new owner may share (same machine, same work dir)."""
    ctx = make_ctx()
    ctx.client = WorkerClient(api, "test-worker-token", lease="old-owner:1:lease")
    assert ctx.store.acquire_lease(ctx.job.id, "new-owner:2:lease", 60)  # another worker took the job
    ctx.lease_lost.set()
    folder = saved_checkpoint(ctx, 1)
    (last,) = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "log"]
    assert (last["message"], last["step"]) == ("checkpoint discarded", 1) and "lease lost" in last["reason"]
    assert not folder.exists()
    assert WorkerClient(api, "test-worker-token").latest_checkpoint(ctx.job.id) is None


def saved_checkpoint(ctx: JobContext, step: int, size: int = 0) -> Path:
    """A whole checkpoint on disk, handed to the lifecycle as a backend does once it is written."""
    folder = ctx.checkpoint_path(step)
    folder.mkdir()
    (folder / "adapter.bin").write_bytes(b"w" * size)
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    ctx.checkpoint_saved(folder, step)
    return folder


def test_the_newest_checkpoints_are_kept_older_and_torn_ones_go(make_ctx):
    ctx = make_ctx()  # KTOFORGE_KEEP_CHECKPOINTS: 2
    (ctx.checkpoint_dir / "checkpoint-2.tmp").mkdir()  # an MLX save cut short
    (ctx.checkpoint_dir / "checkpoint-1").mkdir()  # a torch save cut short (no trainer_state.json)
    for step in (2, 4, 6):
        saved_checkpoint(ctx, step)
    assert sorted(p.name for p in ctx.checkpoint_dir.iterdir()) == ["checkpoint-2.tmp", "checkpoint-4",
                                                                   "checkpoint-6"]
    assert ctx.latest_checkpoint() == (6, ctx.checkpoint_path(6))


def test_twenty_jobs_in_a_row_leave_the_worker_disk_bounded(new_job, api):
    """Each succeeded job's folder (three 256 KiB checkpoints, outputs) goes once its artifacts are uploaded:
    after 20 jobs the work dir holds the cached dataset and nothing per job."""
    store, make = new_job
    peak: list[int] = []

    def run(ctx: JobContext) -> Outcome:
        for step in (1, 2, 3):
            saved_checkpoint(ctx, step, size=256 * 1024)
            ctx.report({"loss": 0.5, "step": step, "max_steps": 3})
            peak.append(len(ctx.checkpoints()))
        (ctx.output_dir / "result.txt").write_text("trained")
        return ctx.outcome(3)

    work = Path(get_settings().work_dir)
    for _ in range(20):
        job_id = make()
        run_job(job_id, "cuda", run)
        assert store.get(job_id).status == JobStatus.succeeded
    assert max(peak) == get_settings().keep_checkpoints == 2
    assert list((work / "jobs").iterdir()) == []
    used = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    dataset = sum(p.stat().st_size for p in (work / "datasets").iterdir())
    assert used == dataset < 64 * 1024, used


def steal_lease_after_step(store, job_id: str, step: int, new_owner: str, api: str, done: list) -> None:
    """Another worker takes the job once it has reported ``step`` (as after a network split: the reaper requeued
    it and a second worker got the lease), and stores its own checkpoint in the API at once."""
    while (store.get(job_id).step or 0) < step:
        time.sleep(0.02)
    holder = store.lease_holder(job_id)
    store.release_lease(job_id, holder)
    assert store.acquire_lease(job_id, new_owner, 60)
    folder = Path(get_settings().work_dir) / "new-owner" / "checkpoint-1"
    folder.mkdir(parents=True)
    (folder / "owner.txt").write_text(new_owner)
    WorkerClient(api, "test-worker-token", lease=new_owner).upload_checkpoint(job_id, folder, 1)
    done.append(time.time())


@pytest.mark.parametrize("backend", ["cuda", "mlx"])
def test_a_worker_that_loses_its_lease_mid_run_uploads_nothing_afterwards(new_job, api, tmp_path, backend):
    """On both backends: the old worker stops within a step or two of noticing, uploads no checkpoint and no
    artifact, keeps no checkpoint written after the loss (save_steps is beyond the run: any would be a save at
    the stop), leaves the job running (it is the new owner's), and the checkpoint in the API is the new owner's."""
    if backend == "mlx":
        pytest.importorskip("mlx.core")
        from ktoforge_mlx.worker import train
    else:
        from ktoforge_worker.train import train
    store, make = new_job
    job_id = make(max_steps=400, save_steps=1000, logging_steps=1)
    new_owner, stolen = "new-owner:2:lease", []
    thief = threading.Thread(target=steal_lease_after_step, args=(store, job_id, 2, new_owner, api, stolen))
    thief.start()
    run_job(job_id, backend, train, worker="old-worker")
    thief.join(30)
    job = store.get(job_id)
    assert stolen and job.status == JobStatus.running and job.step < 400
    assert store.lease_holder(job_id) == new_owner
    client = WorkerClient(api, "test-worker-token")
    assert client.latest_checkpoint(job_id) == 1
    fetched = client.download_checkpoint(job_id, 1, tmp_path / "fetched")
    assert (fetched / "owner.txt").read_text() == new_owner
    assert not (Path(get_settings().data_dir) / "artifacts" / job_id).exists()
    saves = [e.data for e in store.events(job_id, None, 1000) if e.type == "log" and "uploaded" in e.data]
    assert saves == []  # no checkpoint offered for upload at all (save_steps is beyond the run)
    assert job_folder(job_id).is_dir()  # not removed: the new owner may be on this machine, using it
    assert list((job_folder(job_id) / "checkpoints").glob("checkpoint-*")) == []  # nor written after the loss

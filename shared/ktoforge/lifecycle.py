"""One job run on any backend: lease, heartbeat, state changes, dataset in, artifacts out.

The torch and MLX workers differ only in their ``train`` function; everything that makes a run safe
(no double training, recovery after a crash, cooperative cancel, a reason on failure) lives here once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from ktoforge.health import HealthMonitor
from ktoforge.ids import is_job_id
from ktoforge.job_outputs import write_extras
from ktoforge.jobs import TERMINAL, JobNotFound, JobStore
from ktoforge.schemas import Job, JobStatus
from ktoforge.settings import Settings, get_settings
from ktoforge.worker_client import WorkerClient

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a backend's train function gets: the job, its files, and the ways to report and to stop."""

    job: Job
    store: JobStore
    settings: Settings
    dataset_path: Path
    output_dir: Path
    checkpoint_dir: Path
    lease_lost: threading.Event = field(default_factory=threading.Event)
    client: WorkerClient | None = None  # None: no API to keep checkpoints in (backends run on their own)
    health: HealthMonitor = field(default_factory=HealthMonitor)

    def report(self, metrics: dict[str, Any]) -> None:
        """Stream one log of metrics (TRL's names plus step, max_steps, eta_s) as a job event.

        ktoforge.health reads it first: a NaN/inf loss raises TrainingDiverged here (the job fails, naming the
        step, before a NaN reaches the event stream); its warnings follow the metrics as events of type "warning".
        """
        warnings = self.health.check(metrics)
        self.store.add_event(self.job.id, "metrics", metrics)
        self.store.update(self.job.id, step=metrics.get("step"), max_steps=metrics.get("max_steps"))
        for warning in warnings:
            self.store.add_event(self.job.id, "warning", {"message": warning, "step": metrics.get("step")})

    def log(self, message: str, **data: Any) -> None:
        self.store.add_event(self.job.id, "log", {"message": message, **data})

    def checkpoint_saved(self, folder: Path, step: int) -> None:
        """Called by a backend once a checkpoint is whole on disk: the API keeps a copy, so a worker on another
        machine can resume the job. A failed upload costs only that: training goes on, the local copy stays.
        A worker that lost its lease sends nothing: the job belongs to another worker now, and the API's copy
        is that worker's (the MLX loop saves a checkpoint when it stops, lease lost or not)."""
        outcome: dict[str, Any] = {"uploaded": False}
        if self.lease_lost.is_set():
            outcome["error"] = "lease lost to another worker: not uploaded"
        elif self.client is not None and self.settings.upload_checkpoints:
            try:
                self.client.upload_checkpoint(self.job.id, folder, step)
                outcome["uploaded"] = True
            except Exception as exc:
                log.warning("job %s: checkpoint %s not uploaded: %s", self.job.id, step, exc)
                outcome["error"] = failure_reason(exc, self.settings)
        self.log("checkpoint saved", step=step, **outcome)

    def fetch_checkpoint(self) -> None:
        """A resumed job whose latest checkpoint was written on another worker's disk takes it from the API."""
        if self.client is None or not self.settings.upload_checkpoints:
            return
        step = self.client.latest_checkpoint(self.job.id)
        if step is not None and not (self.checkpoint_dir / f"checkpoint-{step}").is_dir():
            self.client.download_checkpoint(self.job.id, step, self.checkpoint_dir)
            self.log("checkpoint fetched from the API", step=step)

    def should_stop(self) -> bool:
        """Checked every step: a user cancel, or our lease went to another worker."""
        return self.lease_lost.is_set() or self.store.cancel_requested(self.job.id)


TrainFn = Callable[[JobContext], None]


class _Heartbeat(threading.Thread):
    """Renews the job's lease (and heartbeat) until stopped; flags a lost lease."""

    def __init__(self, store: JobStore, job_id: str, owner: str, settings: Settings, lost: threading.Event):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.args = (store, job_id, owner, settings)
        self.lost, self.stopped = lost, threading.Event()

    def run(self) -> None:
        store, job_id, owner, settings = self.args
        while not self.stopped.wait(settings.heartbeat_interval_s):
            try:
                if not store.renew_lease(job_id, owner, settings.lease_ttl_s):
                    self.lost.set()
                    return
            except Exception:  # Redis restarting: keep trying until the lease would have expired
                log.warning("heartbeat of job %s failed; retrying", job_id)


def failure_reason(exc: BaseException, settings: Settings) -> str:
    """What the user reads on a failed job: type and message, no traceback, no secret of ours in it."""
    reason = f"{type(exc).__name__}: {exc}"
    secrets = [v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)]
    secrets.append(urlsplit(settings.redis_url).password)
    for secret in filter(None, secrets):
        reason = reason.replace(secret, "***")
    return reason[:2000]


def _acquire(store: JobStore, job_id: str, owner: str, settings: Settings) -> bool:
    """Take the lease; wait for a dead holder's lease to expire, give up if its holder keeps renewing it."""
    deadline = time.time() + 2 * settings.lease_ttl_s
    while True:
        if store.acquire_lease(job_id, owner, settings.lease_ttl_s):
            store.renew_lease(job_id, owner, settings.lease_ttl_s)
            return True
        if time.time() > deadline:
            return False
        time.sleep(min(1.0, settings.lease_ttl_s / 4))


def _forget_checkpoint(client: WorkerClient, job_id: str) -> None:
    """A finished job's checkpoint in the API is no longer needed (a failed job's stays, for diagnosis)."""
    try:
        client.delete_checkpoint(job_id)
    except Exception as exc:  # the job is done either way; a leftover file is all it costs
        log.warning("job %s: its checkpoint in the API was not deleted: %s", job_id, exc)


def run_job(job_id: str, backend: str, train: TrainFn, worker: str | None = None) -> None:
    """Run one delivery of a job's message; returns normally in every case so the message is acked."""
    if not is_job_id(job_id):  # it would name a folder: work_dir/jobs/<id> must stay inside work_dir/jobs
        log.error("%r is not a job id; dropping its message", str(job_id)[:80])
        return
    settings = get_settings()
    store = JobStore.from_url(settings.redis_url)
    try:
        job = store.get(job_id)
    except JobNotFound:
        log.error("job %s does not exist; dropping its message", job_id)
        return
    if job.status in TERMINAL:
        log.info("job %s is %s; not training it", job_id, job.status.value)
        return
    # The lease token is also what the API asks of this worker's uploads: a full uuid4 cannot be guessed.
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    if not _acquire(store, job_id, owner, settings):
        log.info("%s job %s is being trained by %s; this delivery is a duplicate", backend, job_id,
                 store.lease_holder(job_id))
        return
    lost = threading.Event()
    heartbeat = _Heartbeat(store, job_id, owner, settings, lost)
    heartbeat.start()
    try:
        _run_leased(store, settings, job_id, train, lost, worker or owner.rsplit(":", 1)[0], owner)
    finally:
        heartbeat.stopped.set()
        store.release_lease(job_id, owner)


def _run_leased(store: JobStore, settings: Settings, job_id: str, train: TrainFn, lost: threading.Event,
                worker: str, lease: str) -> None:
    job = store.get(job_id)
    if job.status in TERMINAL:
        return
    if job.status == JobStatus.running:  # the worker of the previous attempt died mid-run
        if job.attempts >= settings.max_attempts:
            store.transition(job_id, JobStatus.failed, reason=(
                f"the worker was lost {job.attempts} times; it was probably killed for lack of memory: lower "
                "max_length or per_device_train_batch_size, or use a smaller model"))
            return
        job = store.resume(job_id, worker)
    else:
        job = store.transition(job_id, JobStatus.running, worker=worker)
    root = Path(settings.work_dir) / "jobs" / job_id
    try:
        client = WorkerClient(settings.api_url, settings.worker_token.get_secret_value(), lease,
                              settings.max_worker_upload_mb)
        dataset = client.download_dataset(job.dataset_id, Path(settings.work_dir) / "datasets")
        ctx = JobContext(job, store, settings, dataset, root / "output", root / "checkpoints", lost, client)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ctx.fetch_checkpoint()
        train(ctx)
        if lost.is_set():
            log.warning("job %s: lease lost to another worker; leaving the job to it", job_id)
            return
        if store.cancel_requested(job_id):
            store.transition(job_id, JobStatus.cancelled, reason=f"cancelled by user at step {store.get(job_id).step}")
        else:
            write_extras(ctx.output_dir, job.model, ctx.log, f"{job.id} · {job.model}")  # curves.png, Modelfile
            for path in sorted(ctx.output_dir.iterdir()):
                if path.is_file():
                    client.upload_artifact(job_id, path)
            store.transition(job_id, JobStatus.succeeded)
        _forget_checkpoint(client, job_id)
    except Exception as exc:  # the job fails with a reason; the worker lives on for the next job
        log.exception("job %s failed", job_id)
        store.transition(job_id, JobStatus.failed, reason=failure_reason(exc, settings))

"""One job run on any backend: lease, heartbeat, state changes, dataset in, artifacts out, and every chore
both backends share.

The torch and MLX workers differ only in their TrainingBackend (ktoforge.backend: load, prepare, train);
everything that makes a run safe (no double training, recovery after a crash, cooperative cancel, a reason on failure)
and everything the two would otherwise each redo (model resolution with hub access and token, checkpoint
naming, lookup and retention, metrics.jsonl, job_config.json, the worker folder) lives here once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
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

from ktoforge.backend import Completed, Outcome, Prepared, Stopped, StopReason, TrainingBackend
from ktoforge.health import HealthMonitor
from ktoforge.ids import is_job_id
from ktoforge.job_outputs import write_extras
from ktoforge.jobs import TERMINAL, JobNotFound, JobStore
from ktoforge.models import ModelSource, model_source
from ktoforge.schemas import Job, JobStatus
from ktoforge.settings import Settings, get_settings
from ktoforge.worker_client import WorkerClient

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
JOB_CONFIG_FILE = "job_config.json"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # transformers' folder names, which the MLX loop uses too
CHECKPOINT_DONE = "trainer_state.json"  # written last by both backends: a folder without it is a torn save


@dataclass
class JobContext:
    """What a backend gets: the job, its files, and the ways to report and to stop."""

    job: Job
    store: JobStore
    settings: Settings
    dataset_path: Path
    output_dir: Path
    checkpoint_dir: Path
    lease_lost: threading.Event = field(default_factory=threading.Event)
    client: WorkerClient | None = None  # None: no API to keep checkpoints in (backends run on their own)
    health: HealthMonitor = field(default_factory=HealthMonitor)
    stop_seen: StopReason | None = None  # the first stop the backend's loop was told of: its outcome says it

    def report(self, metrics: dict[str, Any]) -> None:
        """Stream one log of metrics (TRL's names plus step, max_steps, eta_s) as a job event, and append it to
        the job's metrics.jsonl (one line per log, the same shape on both backends).

        ktoforge.health reads it first: a NaN/inf loss raises TrainingDiverged here (the job fails, naming the
        step, before a NaN reaches the event stream); its warnings follow the metrics as events of type "warning".
        """
        warnings = self.health.check(metrics)
        with (self.output_dir / METRICS_FILE).open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        self.store.add_event(self.job.id, "metrics", metrics)
        self.store.update(self.job.id, step=metrics.get("step"), max_steps=metrics.get("max_steps"))
        for warning in warnings:
            self.store.add_event(self.job.id, "warning", {"message": warning, "step": metrics.get("step")})

    def log(self, message: str, **data: Any) -> None:
        self.store.add_event(self.job.id, "log", {"message": message, **data})

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"checkpoint-{step}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of each whole checkpoint of this job on this disk, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.checkpoint_dir.iterdir()
                 if (m := CHECKPOINT.fullmatch(p.name)) and (p / CHECKPOINT_DONE).is_file()]
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """Where a (re)delivered job resumes: its newest whole checkpoint, here or fetched from the API."""
        return (self.checkpoints() or [None])[-1]

    def checkpoint_saved(self, folder: Path, step: int) -> None:
        """Called by a backend once a checkpoint is whole on disk: the API keeps a copy, so a worker on another
        machine can resume the job, and this disk keeps the newest KTOFORGE_KEEP_CHECKPOINTS. A failed upload
        costs only that: training goes on, the local copy stays.

        A worker that lost its lease keeps nothing: the job belongs to another worker now, whose checkpoint in
        the API must stay, and which may share this disk (the MLX loop saves a checkpoint when it stops)."""
        if self.lease_lost.is_set():
            shutil.rmtree(folder, ignore_errors=True)
            self.log("checkpoint discarded", step=step, reason="lease lost to another worker: not kept, not uploaded")
            return
        self._keep_newest()
        outcome: dict[str, Any] = {"uploaded": False}
        if self.client is not None and self.settings.upload_checkpoints:
            try:
                self.client.upload_checkpoint(self.job.id, folder, step)
                outcome["uploaded"] = True
            except Exception as exc:
                log.warning("job %s: checkpoint %s not uploaded: %s", self.job.id, step, exc)
                outcome["error"] = failure_reason(exc, self.settings)
        self.log("checkpoint saved", step=step, **outcome)

    def _keep_newest(self) -> None:
        """Retention, one rule for both backends: every checkpoint folder older than the newest
        KTOFORGE_KEEP_CHECKPOINTS whole ones goes (torn ones among them too)."""
        kept = self.checkpoints()[-self.settings.keep_checkpoints:]
        if not kept:
            return
        oldest_kept = kept[0][0]
        for path in self.checkpoint_dir.iterdir():
            if (m := CHECKPOINT.fullmatch(path.name)) and int(m[1]) < oldest_kept:
                shutil.rmtree(path, ignore_errors=True)

    def fetch_checkpoint(self) -> None:
        """A resumed job whose latest checkpoint was written on another worker's disk takes it from the API."""
        if self.client is None or not self.settings.upload_checkpoints:
            return
        step = self.client.latest_checkpoint(self.job.id)
        if step is not None and not self.checkpoint_path(step).is_dir():
            self.client.download_checkpoint(self.job.id, step, self.checkpoint_dir)
            self.log("checkpoint fetched from the API", step=step)

    def stop_reason(self) -> StopReason | None:
        if self.lease_lost.is_set():
            return StopReason.lease_lost
        return StopReason.cancelled if self.store.cancel_requested(self.job.id) else None

    def should_stop(self) -> bool:
        """Checked by the backend's loop after every step: a user cancel, or our lease went to another worker.
        The first stop seen is remembered: the run's outcome is what the loop was told, not a flag re-read later."""
        reason = self.stop_reason()
        if reason is not None and self.stop_seen is None:
            self.stop_seen = reason
        return reason is not None

    def outcome(self, step: int) -> Outcome:
        """How the backend's loop ended at ``step``: stopped (and why) if it was told to stop, else completed
        (the backend then writes the adapter before returning it)."""
        return Stopped(step, self.stop_seen) if self.stop_seen is not None else Completed(step)

    def write_job_config(self, backend: str, source: ModelSource, prepared: Prepared) -> None:
        """job_config.json, one shape on both backends; the backend's own resolved settings under its name."""
        config = {"job": self.job.model_dump(mode="json"), "backend": backend, "model_path": source.ref,
                  "rows": prepared.rows, "resolved_weights": prepared.weights, backend: prepared.config}
        (self.output_dir / JOB_CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))


Run = Callable[[JobContext], Outcome]


def run_backend(backend: TrainingBackend, ctx: JobContext) -> Outcome:
    """One run of the job on ``backend``: the model resolved for it (a hub model's access checked with
    KTOFORGE_HF_TOKEN before anything downloads), the run's settings recorded, then load, prepare, train."""
    source = model_source(ctx.job.model, ctx.settings)
    prepared = backend.prepare(ctx, backend.load(ctx, source))
    ctx.write_job_config(backend.name, source, prepared)
    outcome = backend.train(ctx, prepared)
    if not isinstance(outcome, Completed | Stopped):
        raise TypeError(f"the {backend.name} backend returned {outcome!r}, not an Outcome")
    return outcome


class Renewal(threading.Thread):
    """Calls ``renew`` every ``interval_s`` until stopped: a job's lease and heartbeat, an evaluation's claim.
    When ``renew`` returns False (someone else holds it now) it sets ``lost`` and ends."""

    def __init__(self, name: str, renew: Callable[[], bool], interval_s: float, lost: threading.Event):
        super().__init__(name=name, daemon=True)
        self.renew, self.interval_s = renew, interval_s
        self.lost, self.stopped = lost, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except Exception:  # Redis restarting: keep trying until the lease would have expired
                log.warning("%s failed; retrying", self.name)


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


def run_job(job_id: str, backend: str, run: Run, worker: str | None = None) -> None:
    """Run one delivery of a job's message on ``backend`` (its name), ``run`` being that backend's entry (e.g.
    ``run_backend`` of its TrainingBackend); returns normally in every case so the message is acked."""
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
    heartbeat = Renewal(f"heartbeat of job {job_id}", lambda: store.renew_lease(job_id, owner, settings.lease_ttl_s),
                        settings.heartbeat_interval_s, lost)
    heartbeat.start()
    try:
        _run_leased(store, settings, job_id, run, lost, worker or owner.rsplit(":", 1)[0], owner)
    finally:
        heartbeat.stopped.set()
        store.release_lease(job_id, owner)


def _start(store: JobStore, settings: Settings, job_id: str, worker: str) -> Job | None:
    """The job marked running by this worker (a resume when its previous worker died mid-run), or None when
    there is nothing to train: it ended meanwhile, or it has been lost too often."""
    job = store.get(job_id)
    if job.status in TERMINAL:
        return None
    if job.status != JobStatus.running:
        return store.transition(job_id, JobStatus.running, worker=worker)
    if job.attempts >= settings.max_attempts:
        store.transition(job_id, JobStatus.failed, reason=(
            f"the worker was lost {job.attempts} times; it was probably killed for lack of memory: lower "
            "max_length or per_device_train_batch_size, or use a smaller model"))
        return None
    return store.resume(job_id, worker)


def _run_leased(store: JobStore, settings: Settings, job_id: str, run: Run, lost: threading.Event,
                worker: str, lease: str) -> None:
    job = _start(store, settings, job_id, worker)
    if job is None:
        return
    root = Path(settings.work_dir) / "jobs" / job_id
    try:
        client = WorkerClient(settings.api_url, settings.worker_token.get_secret_value(), lease,
                              settings.max_worker_upload_mb)
        dataset = client.download_dataset(job.dataset_id, Path(settings.work_dir) / "datasets")
        ctx = JobContext(job, store, settings, dataset, root / "output", root / "checkpoints", lost, client)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ctx.fetch_checkpoint()
        outcome = run(ctx)
        if not isinstance(outcome, Completed | Stopped):
            raise TypeError(f"the backend's run returned {outcome!r}, not an Outcome")
        if not _finish(ctx, client, outcome):
            return
    except Exception as exc:  # the job fails with a reason; the worker lives on for the next job
        log.exception("job %s failed", job_id)
        store.transition(job_id, JobStatus.failed, reason=failure_reason(exc, settings))
        return  # its folder stays, for diagnosis
    _remove_folder(root)


def _finish(ctx: JobContext, client: WorkerClient, outcome: Outcome) -> bool:
    """Act on how the run ended; True once the job is over here (its folder can go)."""
    job_id = ctx.job.id
    if ctx.lease_lost.is_set():  # whatever the run says: the job is another worker's, so are its files and state
        log.warning("job %s: lease lost to another worker at step %s; leaving the job to it", job_id, outcome.step)
        return False
    if isinstance(outcome, Stopped):
        ctx.store.transition(job_id, JobStatus.cancelled, reason=f"cancelled by user at step {outcome.step}")
    else:
        write_extras(ctx.output_dir, ctx.job.model, ctx.log, f"{job_id} · {ctx.job.model}")  # curves.png, Modelfile
        for path in sorted(ctx.output_dir.iterdir()):
            if path.is_file():
                client.upload_artifact(job_id, path)
        ctx.store.transition(job_id, JobStatus.succeeded)
    _forget_checkpoint(client, job_id)
    return True


def _remove_folder(root: Path) -> None:
    """A finished job's worker folder (checkpoints, outputs: gigabytes for a 7B model) is not needed once its
    artifacts are in the API; a worker that runs for days would otherwise fill its disk. A failed job's stays."""
    try:
        shutil.rmtree(root)
    except OSError as exc:  # the job is done either way
        log.warning("worker folder %s not removed: %s", root, exc)

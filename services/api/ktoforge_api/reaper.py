"""Recovery of jobs whose worker vanished (OOM kill, reboot, pulled cable).

Celery only redelivers an unacked message after the Redis visibility timeout, which we set longer than
any job (see ktoforge.queue). So recovery is ours: workers heartbeat into the job store, and this reaper
requeues a running job whose heartbeat is stale and whose lease expired (the next worker resumes it from
its last checkpoint), or fails it after ``max_attempts`` deliveries so a job that kills every worker does
not loop forever. An evaluation whose worker stopped renewing its claim is failed, with a reason that says to
queue it again (it has no checkpoint to resume). It runs inside the API; a Redis lock keeps several API
replicas from reaping twice.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from ktoforge.evaluation.records import EvaluationStatus, EvaluationStore
from ktoforge.jobs import JobStore, TransitionError
from ktoforge.queue import enqueue
from ktoforge.schemas import JobStatus
from ktoforge.settings import Settings

log = logging.getLogger(__name__)


def reap_once(store: JobStore, app: Celery, settings: Settings) -> list[str]:
    """Requeue or fail every running job whose worker is gone; returns the ids it acted on."""
    if not store.try_lock("reaper", settings.reaper_interval_s):
        return []
    acted = []
    jobs, _ = store.list(JobStatus.running, 0, 10_000)
    for job in jobs:
        age = store.heartbeat_age(job.id)
        if store.lease_holder(job.id) is not None or (age is not None and age < settings.heartbeat_stale_s):
            continue
        silent = "never" if age is None else f"{age:.0f} s ago"
        try:
            if job.attempts >= settings.max_attempts:
                store.transition(job.id, JobStatus.failed, reason=(
                    f"the worker was lost {job.attempts} times (last heartbeat {silent}); it was probably killed "
                    "for lack of memory: lower max_length or per_device_train_batch_size, or use a smaller model"))
            else:
                store.transition(job.id, JobStatus.queued,
                                 reason=f"worker lost (last heartbeat {silent}); requeued to resume")
                enqueue(app, job.id, job.backend)
        except TransitionError:
            continue  # it finished or was cancelled meanwhile
        log.warning("reaped job %s (attempt %s, heartbeat %s)", job.id, job.attempts, silent)
        acted.append(job.id)
    return acted


def reap_evaluations(store: JobStore, evals: EvaluationStore, settings: Settings) -> list[str]:
    """Fail every running evaluation whose claim lapsed (its worker stopped renewing it: killed, rebooted);
    returns their ids. Until this existed, such an evaluation stayed 'running' for good."""
    if not store.try_lock("evaluation-reaper", settings.reaper_interval_s):
        return []
    acted = []
    for evaluation_id in evals.running_ids():
        ev = evals.get(evaluation_id)
        if ev is None or ev.status != EvaluationStatus.running or evals.claim_holder(evaluation_id) is not None:
            continue
        worker = f"its worker {ev.worker}" if ev.worker else "its worker"
        evals.update(evaluation_id, status=EvaluationStatus.failed, reason=(
            f"{worker} was lost during the evaluation (its claim was not renewed for {settings.lease_ttl_s:g} s); "
            "queue the evaluation again"))
        log.warning("reaped evaluation %s of job %s (worker %s)", evaluation_id, ev.job_id, ev.worker)
        acted.append(evaluation_id)
    return acted


def start_reaper(store: JobStore, app: Celery, settings: Settings) -> threading.Event:
    """Run reap_once and reap_evaluations every ``reaper_interval_s`` in a daemon thread; set the returned
    event to stop it."""
    stop = threading.Event()
    evals = EvaluationStore.from_url(settings.redis_url)

    def loop() -> None:
        while not stop.wait(settings.reaper_interval_s):
            try:
                reap_once(store, app, settings)
                reap_evaluations(store, evals, settings)
            except Exception:  # Redis down for a moment: try again next round
                log.exception("reaper round failed")

    threading.Thread(target=loop, name="ktoforge-reaper", daemon=True).start()
    return stop

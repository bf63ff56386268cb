"""The torch worker's Celery app: consumes queue ``cuda``.

Run as prefork with concurrency 1 and --max-tasks-per-child 1: every job trains in a fresh child, which exits
afterwards, so all CUDA memory is returned between jobs and the parent (never touching torch) stays responsive
to Flower, ping and revoke. The child imports the training stack as soon as it starts (prewarm, unless
KTOFORGE_WORKER_PREWARM=false): while the worker is idle, not in the next job's run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from ktoforge.backend import Outcome
from ktoforge.evaluation.records import EVAL_TASK
from ktoforge.lifecycle import JobContext, run_job
from ktoforge.queue import TRAIN_TASK, make_celery
from ktoforge.settings import get_settings

# The pool waits this long for a new child's "up" message before killing it (Celery's default, 4 s, is less than
# the prewarm's imports take: the child would be killed and forked again forever). Unsloth's import on a GPU is
# the slowest case; a child that hangs longer is killed and replaced.
CHILD_START_TIMEOUT_S = 600.0

celery_app = make_celery()
celery_app.conf.worker_proc_alive_timeout = CHILD_START_TIMEOUT_S
log = logging.getLogger(__name__)


@signals.worker_process_init.connect(weak=False, dispatch_uid="ktoforge-prewarm")
def prewarm(**_: Any) -> None:
    """In each new pool child: the training stack imported before a job arrives (loading.import_training_stack).

    A task that arrives meanwhile waits for it in the queue: the pool hands work only to a child that is up.
    A failed import is logged and left to the job, whose run imports the same modules and reports the error
    on the job record, where the user sees it."""
    settings = get_settings()
    if not settings.worker_prewarm:
        return
    start = time.perf_counter()
    try:
        from ktoforge_worker.loading import import_training_stack

        unsloth = import_training_stack(settings)
    except Exception:  # noqa: BLE001 - the job's own run meets it again and records it
        log.warning("prewarm: importing the training stack failed; the next job imports it", exc_info=True)
        return
    log.info("prewarm: training stack imported in %.1f s (unsloth: %s)", time.perf_counter() - start, unsloth)


def _train(ctx: JobContext) -> Outcome:
    """The torch backend, imported once the job is marked running: already in the child (prewarm), or imported
    here, where the seconds it takes are part of the run, not of the wait between submit and running."""
    from ktoforge_worker.train import train

    return train(ctx)


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: str) -> None:
    run_job(job_id, "cuda", _train, worker=self.request.hostname)


@celery_app.task(name=EVAL_TASK, bind=True)
def evaluate_job(self, job_id: str, evaluation_id: str) -> None:
    """Base model vs adapter on a prompt set (ktoforge.evaluation.run), in a fresh child like training."""
    from ktoforge.evaluation.run import run_evaluation
    from ktoforge_worker.generate import generate

    run_evaluation(job_id, evaluation_id, "cuda", generate, worker=self.request.hostname)

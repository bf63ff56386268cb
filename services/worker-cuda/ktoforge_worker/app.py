"""The torch worker's Celery app: consumes queue ``cuda``.

Run as prefork with concurrency 1 and --max-tasks-per-child 1: every job trains in a fresh child, which
imports torch/Unsloth inside the task and exits afterwards, so all CUDA memory is returned between jobs and
the parent (never touching torch) stays responsive to Flower, ping and revoke.
"""

from __future__ import annotations

from ktoforge.lifecycle import run_job
from ktoforge.queue import TRAIN_TASK, make_celery

celery_app = make_celery()


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: str) -> None:
    from ktoforge_worker.train import train  # heavy imports happen here, in the child

    run_job(job_id, "cuda", train, worker=self.request.hostname)

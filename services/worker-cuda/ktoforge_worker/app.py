"""The torch worker's Celery app: consumes queue ``cuda``.

Run as prefork with concurrency 1 and --max-tasks-per-child 1: every job trains in a fresh child, which
imports torch/Unsloth inside the task and exits afterwards, so all CUDA memory is returned between jobs and
the parent (never touching torch) stays responsive to Flower, ping and revoke.
"""

from __future__ import annotations

from ktoforge.backend import Outcome
from ktoforge.evaluation.records import EVAL_TASK
from ktoforge.lifecycle import JobContext, run_job
from ktoforge.queue import TRAIN_TASK, make_celery

celery_app = make_celery()


def _train(ctx: JobContext) -> Outcome:
    """The torch backend, imported only once the job is marked running: the seconds torch, transformers and TRL
    take to import are then part of the run, not of the wait between submit and running."""
    from ktoforge_worker.train import train  # heavy imports happen here, in the child

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

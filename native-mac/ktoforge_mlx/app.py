"""The Mac worker's Celery app: ``celery -A ktoforge_mlx.app worker -Q mlx -P solo -n mlx@%h``.

torch is made unimportable first: mlx-lm imports transformers, which imports torch whenever it is
installed (as on a dev machine that also runs the CUDA worker). Marking it absent makes transformers
behave as on a Mac without torch, and keeps this worker's memory for MLX.
"""

from __future__ import annotations

import sys

if "torch" not in sys.modules:
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch → ImportError; find_spec → None

from ktoforge.evaluation.records import EVAL_TASK  # noqa: E402
from ktoforge.lifecycle import run_job  # noqa: E402
from ktoforge.queue import TRAIN_TASK, make_celery  # noqa: E402

celery_app = make_celery()
celery_app.conf.task_default_queue = "mlx"


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: str) -> None:
    """One job at a time (solo pool): MLX owns the whole GPU while it trains."""
    from ktoforge_mlx.worker import train

    run_job(job_id, "mlx", train, worker=self.request.hostname)


@celery_app.task(name=EVAL_TASK, bind=True)
def evaluate_job(self, job_id: str, evaluation_id: str) -> None:
    """Base model vs adapter on a prompt set (ktoforge.evaluation.run), with mlx-lm."""
    from ktoforge.evaluation.run import run_evaluation
    from ktoforge_mlx.generate import generate

    run_evaluation(job_id, evaluation_id, "mlx", generate, worker=self.request.hostname)

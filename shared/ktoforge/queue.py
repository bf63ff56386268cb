"""The one Celery app: queue names, the task name both workers implement, and long-job settings.

The API sends tasks by name, so it never imports a worker. Settings chosen for hours-long jobs:
- acks_late + prefetch 1: a message is acknowledged only when its job ends, and a worker reserves
  one job at a time, so a crashed worker's job is redelivered instead of lost;
- task_reject_on_worker_lost: a training child killed mid-job (OOM killer) is requeued, not acked;
- visibility_timeout longer than any job: otherwise Redis hands a still-running job to a second
  worker after it (the default 1 h re-runs long jobs); stale jobs are recovered by the reaper instead,
  from heartbeats, within minutes (see ktoforge.reaper);
- JSON only: the broker port is published to the LAN, and pickle would let a message run code.
"""

from __future__ import annotations

from celery import Celery

from ktoforge.settings import get_settings

QUEUES = ("cuda", "mlx")
TRAIN_TASK = "ktoforge.train"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("ktoforge", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cuda",
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
    )
    return app


def enqueue(app: Celery, job_id: str, backend: str) -> None:
    """Send the training task of ``job_id`` to the queue of its backend."""
    app.send_task(TRAIN_TASK, args=[job_id], queue=backend)

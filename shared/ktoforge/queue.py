"""The one Celery app: queue names, the task name both workers implement, and long-job settings.

The API sends tasks by name, so it never imports a worker. Settings chosen for hours-long jobs:
- acks_late + prefetch 1: a message is acknowledged only when its job ends, and a worker reserves
  one job at a time, so a crashed worker's job is redelivered instead of lost;
- task_reject_on_worker_lost: a training child killed mid-job (OOM killer) is requeued, not acked;
- visibility_timeout longer than any job: otherwise Redis hands a still-running job to a second
  worker after it (the default 1 h re-runs long jobs); stale jobs are recovered by the reaper instead,
  from heartbeats, within minutes (see ktoforge.reaper);
- JSON only: the broker port is published to the LAN, and pickle would let a message run code.

Workers announce themselves through Redis (a presence key per node and queue, refreshed every
``heartbeat_interval_s``, see JobStore.announce_worker) from the moment Celery says they are ready until
they stop: the API reads who is there with two cheap commands instead of a Celery broadcast, whose replies
need a connection from kombu's pool for a second per call, and which hung the API under load.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, signals

from ktoforge.device import presence_info as device_presence
from ktoforge.jobs import JobStore
from ktoforge.secret_guard import guard_celery
from ktoforge.settings import get_settings

QUEUES = ("cuda", "mlx")
TRAIN_TASK = "ktoforge.train"
PRESENCE_TTL_BEATS = 3  # a presence key outlives three missed refreshes (a busy Redis, a paused process)
log = logging.getLogger(__name__)
_presence: dict[str, tuple[threading.Event, threading.Thread]] = {}  # node -> stop flag and presence thread


def make_celery(presence_info: Callable[[], dict[str, Any]] | None = None) -> Celery:
    """The Celery app; ``presence_info`` adds fields (e.g. the device) to what each worker announces."""
    settings = get_settings()
    app = Celery("ktoforge", broker=settings.redis_url)
    # By default each announcement carries the worker's device (GPU, Apple chip or CPU, with memory): the API's
    # fit check and GET /v1/workers read it. Only a running worker calls it (the API never does).
    app.ktoforge_presence_info = presence_info or device_presence  # type: ignore[attr-defined]
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
    guard_celery(app)  # `celery worker` / `celery flower` beyond loopback refuse placeholder and dev secrets
    # dispatch_uid: one receiver however many apps a process makes (the API makes one and never runs a worker).
    signals.worker_ready.connect(_start_presence, weak=False, dispatch_uid="ktoforge-presence-start")
    signals.worker_shutdown.connect(_stop_presence, weak=False, dispatch_uid="ktoforge-presence-stop")
    return app


def enqueue(app: Celery, job_id: str, backend: str) -> None:
    """Send the training task of ``job_id`` to the queue of its backend, over a connection of its own.

    Not through Celery's producer pool: its acquire blocks with no timeout once every pooled connection is
    taken, and a request thread stuck there holds the API. A connection per job costs a millisecond; the
    connect (``broker_connection_timeout``) and the publish retries (``task_publish_retry_policy``) are bounded.
    """
    with app.connection_for_write() as connection:
        app.send_task(TRAIN_TASK, args=[job_id], queue=backend, connection=connection)


def _start_presence(sender: Any, **_: Any) -> None:
    """worker_ready: announce this node on each queue it consumes until it shuts down."""
    app, node = sender.app, sender.hostname
    info_of = getattr(app, "ktoforge_presence_info", None)
    if info_of is None:  # a worker of another Celery app in this process
        return
    queues = sorted(q.name for q in sender.task_consumer.queues)
    settings = get_settings()
    store = JobStore.from_url(settings.redis_url)
    stop = threading.Event()
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}

    def beat() -> None:
        while True:
            try:
                info = {**base, **info_of()}  # once per beat: it may ask the device
                for queue in queues:
                    store.announce_worker(node, queue, info, PRESENCE_TTL_BEATS * settings.heartbeat_interval_s)
            except Exception:  # Redis away for a moment: the keys expire, and come back with it
                log.warning("worker presence not written", exc_info=True)
            if stop.wait(settings.heartbeat_interval_s):
                break
        try:
            store.withdraw_worker(node, queues)
        except Exception:
            log.warning("worker presence not withdrawn; it expires by itself", exc_info=True)

    thread = threading.Thread(target=beat, name="ktoforge-presence", daemon=True)
    _presence[node] = stop, thread
    thread.start()


def _stop_presence(sender: Any, **_: Any) -> None:
    """worker_shutdown: stop announcing and withdraw the keys before the process exits (a killed worker's
    keys expire instead)."""
    found = _presence.pop(getattr(sender, "hostname", ""), None)
    if found is not None:
        stop, thread = found
        stop.set()
        thread.join(timeout=5)

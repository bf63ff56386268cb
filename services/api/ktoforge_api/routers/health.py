"""Liveness (the process answers) and readiness (Redis answers; which queues have a worker, what waits)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from redis.backoff import NoBackoff
from redis.retry import Retry

from ktoforge.jobs import JobStore
from ktoforge.queue import QUEUES
from ktoforge.schemas import JobStatus
from ktoforge_api.deps import CeleryDep, SettingsDep, StoreDep

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 1.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis does not answer"}})
async def readyz(store: StoreDep, celery: CeleryDep, settings: SettingsDep) -> JSONResponse:
    """200 when Redis answers; per queue, the workers consuming it and the jobs waiting for one."""
    if not await run_in_threadpool(_redis_answers, settings.redis_url):
        return JSONResponse(status_code=503, content={"redis": False, "queues": {}})
    return JSONResponse({"redis": True, "queues": await run_in_threadpool(_queues, store, celery)})


def _redis_answers(url: str) -> bool:
    """A probe of its own with short timeouts and no retries: the shared client retries for a long time."""
    probe = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S,
                                 retry=Retry(NoBackoff(), 0))
    try:
        return bool(probe.ping())
    except redis.RedisError:
        return False
    finally:
        probe.close()


def _queues(store: JobStore, celery: Celery) -> dict[str, dict[str, Any]]:
    """Workers from a broadcast (they answer within the timeout or count as absent); waiting jobs from records."""
    try:
        replies = celery.control.inspect(timeout=PROBE_TIMEOUT_S).active_queues() or {}
    except Exception:  # a broker hiccup means "no worker seen", never a 500
        log.warning("worker inspection failed", exc_info=True)
        replies = {}
    queued, _ = store.list(JobStatus.queued, 0, 1_000_000)
    result = {}
    for name in QUEUES:
        workers = sorted(w for w, qs in replies.items() if any(q.get("name") == name for q in qs or []))
        result[name] = {"workers": workers, "ready": bool(workers),
                        "queued_jobs": sum(job.backend == name for job in queued),
                        "messages": store.r.llen(name)}
    return result

"""Liveness (the process answers) and readiness (Redis answers; for a key holder, which queues have a worker
and what waits).

/readyz is open to anyone (probes carry no key), so it must stay cheap whoever calls it how often: an answer
is reused for READY_CACHE_S, and refreshed by one call at a time (the others meanwhile get the last answer);
Redis is asked through the probe store (bounded pool, 1 s timeouts, no retries), workers come from the
presence keys they refresh themselves (ktoforge.queue), and queue depth from the per-status indexes
(ktoforge.jobs). An anonymous caller learns only whether the API is ready, not the workers' names.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ktoforge.jobs import JobStore
from ktoforge.queue import QUEUES
from ktoforge_api.deps import IsUserDep, ProbeDep

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
READY_CACHE_S = 1.0


@dataclass
class _Answer:
    """The last answer of one view (anonymous or detailed) of one probe store."""

    body: dict[str, Any] | None = None
    at: float = float("-inf")
    refreshing: bool = False


@dataclass
class _Answers:
    views: dict[bool, _Answer] = field(default_factory=lambda: {False: _Answer(), True: _Answer()})


_answers: weakref.WeakKeyDictionary[JobStore, _Answers] = weakref.WeakKeyDictionary()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis does not answer"}})
async def readyz(probe: ProbeDep, user: IsUserDep) -> JSONResponse:
    """200 when Redis answers. With the API key: per queue, its live workers and the jobs waiting for one."""
    body = await _cached(probe, user)
    return JSONResponse(status_code=200 if body["ready"] else 503, content=body)


async def _cached(probe: JobStore, detailed: bool) -> dict[str, Any]:
    """The answer of at most READY_CACHE_S ago; once there is one, a single call at a time refreshes it (the
    event loop runs one coroutine at a time, so the flag needs no lock)."""
    answer = _answers.setdefault(probe, _Answers()).views[detailed]
    fresh = time.monotonic() - answer.at < READY_CACHE_S
    if answer.body is not None and (fresh or answer.refreshing):
        return answer.body
    answer.refreshing = True
    try:
        body = await run_in_threadpool(_readiness, probe, detailed)
    finally:
        answer.refreshing = False
    answer.body, answer.at = body, time.monotonic()
    return body


def _readiness(probe: JobStore, detailed: bool) -> dict[str, Any]:
    """``{"ready": bool}``, plus ``redis`` and ``queues`` for a key holder; never raises."""
    try:
        probe.r.ping()
        queues = _queues(probe) if detailed else None
    except redis.RedisError:
        log.warning("readiness: Redis does not answer", exc_info=True)
        return {"ready": False, **({"redis": False, "queues": {}} if detailed else {})}
    return {"ready": True, **({"redis": True, "queues": queues} if detailed else {})}


def _queues(probe: JobStore) -> dict[str, dict[str, Any]]:
    """Workers (and the device each advertises) from their presence keys; waiting jobs from the queued index;
    messages from the Celery list."""
    workers = probe.workers()
    waiting = probe.queued_by_backend()
    with probe.r.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            pipe.llen(name)
        messages = dict(zip(QUEUES, pipe.execute()))
    result = {}
    for name in QUEUES:
        live = workers.get(name, [])
        nodes = [w["node"] for w in live]
        result[name] = {"workers": nodes, "ready": bool(nodes), "queued_jobs": waiting.get(name, 0),
                        "messages": messages[name], "devices": {w["node"]: w.get("device") for w in live}}
    return result

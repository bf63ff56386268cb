"""Liveness (the process answers) and readiness (Redis answers; which queues have a worker)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ktoforge.queue import QUEUES
from ktoforge_api.deps import CeleryDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(store: StoreDep, celery: CeleryDep) -> JSONResponse:
    """200 when Redis answers; per queue, the workers consuming it and the messages waiting in it."""
    try:
        await run_in_threadpool(store.r.ping)
    except Exception as exc:  # any connection failure means "not ready", never a 500
        return JSONResponse(status_code=503, content={"redis": False, "error": type(exc).__name__, "queues": {}})
    replies = await run_in_threadpool(lambda: celery.control.inspect(timeout=1.0).active_queues() or {})
    queues = {}
    for q in QUEUES:
        workers = sorted(w for w, qs in replies.items() if any(d.get("name") == q for d in qs))
        waiting = await run_in_threadpool(store.r.llen, q)
        queues[q] = {"workers": workers, "ready": bool(workers), "queued_jobs": waiting}
    return JSONResponse({"redis": True, "queues": queues})

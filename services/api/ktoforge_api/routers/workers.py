"""The live workers of each queue, as their presence heartbeats announce them (with their device)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from ktoforge.queue import QUEUES
from ktoforge.schemas import WorkerList
from ktoforge_api.deps import StoreDep, require_user

router = APIRouter(prefix="/v1/workers", tags=["workers"], dependencies=[Depends(require_user)])


@router.get("", response_model=WorkerList)
async def list_workers(store: StoreDep) -> WorkerList:
    """Per queue (every queue listed, empty when nobody consumes it): name, device, last heartbeat age."""
    live = await run_in_threadpool(store.workers)
    now = time.time()

    def entry(info: dict[str, Any]) -> dict[str, Any]:
        return {"name": info["node"], "host": info.get("host"), "device": info.get("device"),
                "age_s": round(max(0.0, now - float(info.get("time", now))), 1)}

    return WorkerList(queues={queue: [entry(i) for i in live.get(queue, [])] for queue in QUEUES})

"""A job's event stream: state changes and per-step metrics, as a JSON page or Server-Sent Events.

The cursor is the Redis stream id, so an SSE client that reconnects with Last-Event-ID (or a JSON
client with ``after``) continues exactly where it stopped, across API restarts too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ktoforge.jobs import TERMINAL, JobStore
from ktoforge.schemas import EventPage
from ktoforge_api.deps import StoreDep, require_user
from ktoforge_api.routers.jobs import JobDep

router = APIRouter(prefix="/v1/jobs", tags=["events"], dependencies=[Depends(require_user)])
CURSOR = r"^\d+-\d+$"


@router.get("/{job_id}/events", response_model=EventPage,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "JSON page, or an SSE stream when Accept is text/event-stream"}})
async def job_events(
    job: JobDep,
    store: StoreDep,
    request: Request,
    after: Annotated[str | None, Query(pattern=CURSOR, description="Return events after this event id")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: Annotated[str | None, Header(pattern=CURSOR)] = None,
):
    """Events after the cursor, oldest first."""
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(_sse(store, job.id, last_event_id or after, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    items = await run_in_threadpool(store.events, job.id, after, limit)
    return EventPage(items=items, next_after=items[-1].id if items else after)


async def _sse(store: JobStore, job_id: str, cursor: str | None, request: Request) -> AsyncIterator[str]:
    """Send every event after ``cursor``; end once the job is finished and everything was sent."""
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        events = await run_in_threadpool(store.wait_events, job_id, cursor, 5000)
        for event in events:
            cursor = event.id
            yield f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
        if not events:
            if (await run_in_threadpool(store.get, job_id)).status in TERMINAL:
                if not await run_in_threadpool(store.events, job_id, cursor, 1):
                    return
            else:
                yield ": keep-alive\n\n"

"""A job's event stream: state changes and per-step metrics, as a JSON page or Server-Sent Events.

The cursor is the Redis stream id, so an SSE client that reconnects with Last-Event-ID (or a JSON
client with ``after``) continues exactly where it stopped, across API restarts too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from ktoforge.jobs import TERMINAL, JobStore
from ktoforge.schemas import Event, EventPage
from ktoforge_api.deps import StoreDep, require_user
from ktoforge_api.routers.jobs import JobDep

router = APIRouter(prefix="/v1/jobs", tags=["events"], dependencies=[Depends(require_user)])
CURSOR = r"^\d+-\d+$"
FINAL = {status.value for status in TERMINAL}
POLL_S, GRACE_S, RETRY_MS = 0.25, 1.0, 2000  # read period of a live stream; late-event wait; client reconnect delay


@router.get("/{job_id}/events", response_model=EventPage,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "JSON page, or an SSE stream when Accept is text/event-stream"}})
async def job_events(
    job: JobDep,
    store: StoreDep,
    request: Request,
    after: Annotated[str | None, Query(pattern=CURSOR, description="Return events after this event id")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: Annotated[str | None, Header(pattern=CURSOR, description="SSE resume cursor")] = None,
) -> EventPage | EventSourceResponse:
    """Events after the cursor, oldest first."""
    if "text/event-stream" in request.headers.get("accept", ""):
        shutdown = anyio.Event()  # set by EventSourceResponse when the server stops: end cleanly, client resumes
        return EventSourceResponse(_sse(store, job.id, last_event_id or after, shutdown), sep="\n",
                                   shutdown_event=shutdown, shutdown_grace_period=2 * POLL_S)
    items = await run_in_threadpool(store.events, job.id, after, limit)
    return EventPage(items=items, next_after=items[-1].id if items else after)


async def _sse(store: JobStore, job_id: str, cursor: str | None,
               shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
    """Every event after ``cursor``; ends once the job is finished and everything was sent (or at shutdown).

    Reads never block (a blocking XREAD would hold a pool thread per watcher and starve every other route);
    between empty reads the stream sleeps on the event loop. A worker updates the record just before it
    appends the final state event, so a finished job whose final event this stream has not sent (or that the
    client had already seen before resuming) gets a short grace period for late events before the stream ends.
    EventSourceResponse adds keep-alive pings.
    """
    yield ServerSentEvent(retry=RETRY_MS)
    final_sent, finished_since = False, None
    while not shutdown.is_set():
        events, finished = await run_in_threadpool(_read, store, job_id, cursor)
        for event in events:
            cursor = event.id
            final_sent = final_sent or (event.type == "state" and event.data.get("status") in FINAL)
            yield ServerSentEvent(event.model_dump_json(), id=event.id, event=event.type)
        if finished:
            finished_since = finished_since or time.monotonic()
            if final_sent or time.monotonic() - finished_since >= GRACE_S:
                return
        if not events:
            with anyio.move_on_after(POLL_S):
                await shutdown.wait()


def _read(store: JobStore, job_id: str, cursor: str | None) -> tuple[list[Event], bool]:
    """The next events, and (only when there are none) whether the job is finished: one thread hop per poll."""
    events = store.events(job_id, cursor, 500)
    return events, not events and store.get(job_id).status in TERMINAL

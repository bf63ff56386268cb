"""A job's event stream: state changes and per-step metrics, as a JSON page or Server-Sent Events.

The cursor is the Redis stream id, so an SSE client that reconnects with Last-Event-ID (or a JSON
client with ``after``) continues exactly where it stopped, across API restarts too. A cursor Redis would
refuse is a 422 here, and each API key holds at most ``max_sse_per_key`` open streams per API process
(each costs CPU for as long as it is open).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator
from sse_starlette import EventSourceResponse, ServerSentEvent

from ktoforge.jobs import TERMINAL, JobStore, check_cursor
from ktoforge.schemas import Event, EventPage
from ktoforge_api.deps import Credentials, JobDep, SettingsDep, StoreDep, require_user

router = APIRouter(prefix="/v1/jobs", tags=["events"], dependencies=[Depends(require_user)])
FINAL = {status.value for status in TERMINAL}
POLL_S, GRACE_S, RETRY_MS = 0.25, 1.0, 2000  # read period of a live stream; late-event wait; client reconnect delay
_open_streams: Counter[str] = Counter()  # open SSE streams per key digest (only the event loop touches it)


def _valid_cursor(cursor: str | None) -> str | None:
    if cursor is not None:
        check_cursor(cursor)  # ValueError: FastAPI answers 422 naming the parameter
    return cursor


Cursor = AfterValidator(_valid_cursor)


@router.get("/{job_id}/events", response_model=EventPage,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "JSON page, or an SSE stream when Accept is text/event-stream"},
                       429: {"description": "Too many open event streams for this key (KTOFORGE_MAX_SSE_PER_KEY)"}})
async def job_events(
    job: JobDep,
    store: StoreDep,
    request: Request,
    credentials: Credentials,
    settings: SettingsDep,
    after: Annotated[str | None, Query(max_length=64, description="Return events after this event id"), Cursor] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: Annotated[str | None, Header(max_length=64, description="SSE resume cursor"), Cursor] = None,
) -> EventPage | EventSourceResponse:
    """Events after the cursor (a stream id such as `1700000000000-0`), oldest first."""
    if "text/event-stream" in request.headers.get("accept", ""):
        key = hashlib.sha256(credentials.credentials.encode() if credentials else b"").hexdigest()
        if _open_streams[key] >= settings.max_sse_per_key:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=(
                f"{_open_streams[key]} event streams are open for this key; the limit is {settings.max_sse_per_key} "
                "(KTOFORGE_MAX_SSE_PER_KEY): close one, or poll the JSON pages with `after`"))
        _open_streams[key] += 1
        shutdown = anyio.Event()  # set by EventSourceResponse when the server stops: end cleanly, client resumes
        return EventSourceResponse(_counted(key, _sse(store, job.id, last_event_id or after, shutdown)), sep="\n",
                                   shutdown_event=shutdown, shutdown_grace_period=2 * POLL_S)
    items = await run_in_threadpool(store.events, job.id, after, limit)
    return EventPage(items=items, next_after=items[-1].id if items else after)


async def _counted(key: str, stream: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """``stream``, giving its slot back however it ends (finished, client gone, server stopping)."""
    try:
        async for event in stream:
            yield event
    finally:
        _open_streams[key] -= 1
        if _open_streams[key] <= 0:
            del _open_streams[key]


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

"""FastAPI dependencies as ``Annotated`` aliases: settings, the job stores, the Celery app, and auth."""

from __future__ import annotations

import asyncio
import hmac
import weakref
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Annotated, TypeVar

import redis
from celery import Celery
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.backoff import NoBackoff
from redis.retry import Retry

from ktoforge.ids import is_job_id
from ktoforge.jobs import JobNotFound, JobReader, JobStore
from ktoforge.queue import make_celery
from ktoforge.schemas import Job
from ktoforge.settings import Settings, get_settings
from ktoforge_api.storage import Storage

_bearer = HTTPBearer(auto_error=False)
PROBE_TIMEOUT_S = 1.0
PROBE_CONNECTIONS = 8  # /readyz calls beyond this wait (at most PROBE_TIMEOUT_S) for one of these connections
T = TypeVar("T")


@lru_cache
def get_store() -> JobStore:
    return JobStore.from_url(get_settings().redis_url)


_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobReader] = weakref.WeakKeyDictionary()


async def get_reader() -> JobReader:
    """The JobReader of the running event loop (one per loop: each test client runs the app on a loop of its
    own, and an asyncio connection cannot cross loops). Its URL is read when it is made, like get_store's."""
    loop = asyncio.get_running_loop()
    reader = _readers.get(loop)
    if reader is None:
        reader = _readers[loop] = JobReader.from_url(get_settings().redis_url)
    return reader


async def close_reader() -> None:
    """Close the running loop's JobReader and its connections (the app's shutdown): left to the garbage
    collector, each open connection is reported unclosed, and a reader made later opens new ones."""
    reader = _readers.pop(asyncio.get_running_loop(), None)
    if reader is not None:
        await reader.r.aclose()


@lru_cache
def get_probe() -> JobStore:
    """The store /readyz reads through: short timeouts, no retries, a small pool whose wait is bounded.

    The shared store retries for ~30 s so that a Redis restart pauses real work; a readiness probe must
    answer "not ready" within a second instead, and anonymous probes must never take the connections the
    routes use.
    """
    pool = redis.BlockingConnectionPool.from_url(
        get_settings().redis_url, max_connections=PROBE_CONNECTIONS, timeout=PROBE_TIMEOUT_S, decode_responses=True,
        socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    return JobStore(redis.Redis(connection_pool=pool))


@lru_cache
def get_celery() -> Celery:
    return make_celery()


def get_storage() -> Storage:
    return Storage(get_settings().data_dir)


def on_loop(getter: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """A cached getter as an ``async`` dependency, which FastAPI calls on the event loop.

    FastAPI runs every plain ``def`` dependency in its threadpool: one hand-off to a thread and back per
    dependency per request. ``GET /v1/jobs/{id}`` made six (settings, auth, store, job, route, answer check);
    under load the event loop spent its time passing work and the GIL to threads (bench/profiles/). Getters that
    return a cached object need no thread.
    """
    async def dependency() -> T:
        return getter()  # looked up on each call: tests that clear the caches get fresh objects
    return dependency


SettingsDep = Annotated[Settings, Depends(on_loop(get_settings))]
StoreDep = Annotated[JobStore, Depends(on_loop(get_store))]
ReaderDep = Annotated[JobReader, Depends(get_reader)]
ProbeDep = Annotated[JobStore, Depends(on_loop(get_probe))]
CeleryDep = Annotated[Celery, Depends(on_loop(get_celery))]
StorageDep = Annotated[Storage, Depends(get_storage)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


# The checks below are async, like on_loop's getters: no I/O, so no reason to hand them to a thread. They read
# the (cached) settings themselves rather than through SettingsDep: every dependency FastAPI resolves costs a
# request tens of microseconds, and these run on every /v1 request.
def _check(credentials: HTTPAuthorizationCredentials | None, secret: str, what: str) -> None:
    # compare_digest: the time taken does not leak how much of a guessed key was right.
    given = credentials.credentials.encode() if credentials else b""
    if not credentials or not hmac.compare_digest(given, secret.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=f"missing or invalid {what}",
                            headers={"WWW-Authenticate": "Bearer"})


async def require_user(credentials: Credentials) -> None:
    _check(credentials, get_settings().api_key.get_secret_value(), "API key")


async def is_user(credentials: Credentials) -> bool:
    """For routes open to anyone that tell a key holder more (/readyz): True when the user key was sent."""
    try:
        _check(credentials, get_settings().api_key.get_secret_value(), "API key")
    except HTTPException:
        return False
    return True


IsUserDep = Annotated[bool, Depends(is_user)]


async def require_worker(credentials: Credentials) -> None:
    """Worker-only routes take the worker token, never the user key: users cannot forge artifacts."""
    _check(credentials, get_settings().worker_token.get_secret_value(), "worker token")


def job_not_found(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")


async def load_job(job_id: str, reader: ReaderDep) -> Job:
    """The job a route's ``{job_id}`` names, or 404: awaited on the event loop, no thread (JobReader says why)."""
    try:
        return await reader.get(job_id)
    except JobNotFound:
        raise job_not_found(job_id)


JobDep = Annotated[Job, Depends(load_job)]


async def stored_job(job: JobDep) -> Job:
    """A job whose id may name its folders: a record planted in Redis under a key like ``..`` is not found."""
    if not is_job_id(job.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="job not found")
    return job


StoredJobDep = Annotated[Job, Depends(stored_job)]

"""Durable job state in Redis: records, checked transitions, per-job event streams, cancel flags, leases,
and the presence of workers.

The one module that owns job state. Workers write here directly (not through the API) so that events
and transitions survive an API restart; the API reads here. Every record is also in one index per status
(and queued ones in one per backend), written in the same transaction as the record, so a page of jobs or
the number waiting costs the same with ten jobs stored as with a hundred thousand.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, get_args

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ktoforge.job_json import JobAnswers
from ktoforge.schemas import Backend, Event, Job, JobCreate, JobStatus
from ktoforge.settings import get_settings

PREFIX = "kf"
BACKENDS: tuple[str, ...] = get_args(Backend)
INDEX_VERSION = "1"  # bump when the indexes change shape: the API rebuilds them at start (ensure_indexes)
MAX_STREAM_ID = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit number
TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
ALLOWED: dict[JobStatus, set[JobStatus]] = {
    JobStatus.queued: {JobStatus.running, JobStatus.cancelled, JobStatus.failed},
    # running -> queued is the reaper requeueing a job whose worker vanished (it resumes from a checkpoint).
    JobStatus.running: {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.queued},
    JobStatus.succeeded: set(),
    JobStatus.failed: set(),
    JobStatus.cancelled: set(),
}


# Appends one event at most once per token. The client retries a command whose reply was lost (Redis going
# down between running it and answering); without the token that retry would add the event a second time.
# ARGV[4], the stream's length bound, trims it (MAXLEN ~: Redis runs with noeviction, and an endless job must
# not fill its memory); a caller that sends no bound appends untrimmed.
ADD_EVENT_ONCE = """
local done = redis.call('GET', KEYS[2])
if done then return done end
local id
if ARGV[4] then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'type', ARGV[1], 'time', ARGV[2], 'data', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'time', ARGV[2], 'data', ARGV[3])
end
redis.call('SET', KEYS[2], id, 'EX', 600)
return id
"""

class TransitionError(RuntimeError):
    """A state change the lifecycle forbids (e.g. cancelling a finished job)."""


class JobNotFound(KeyError):
    pass


class QueueFull(RuntimeError):
    """The queues hold ``queued`` jobs already: the operator's cap (KTOFORGE_MAX_QUEUED_JOBS)."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs are queued")
        self.queued = queued


def _key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


def _status_index(status: JobStatus | str) -> str:
    return _key("jobs", JobStatus(status).value)


def _queued_index(backend: str) -> str:
    return _key("jobs", JobStatus.queued.value, backend)


def _client_options(retry_class: type) -> dict[str, Any]:
    """The Redis client options of JobStore (threads, ``redis.retry.Retry``) and JobReader (the API's event loop,
    ``redis.asyncio.retry.Retry``), made fresh for each client: redis.asyncio keeps ``retry_on_error`` by
    reference in every connection, so no list here is shared.

    Retry with backoff for ~30 s (12 tries, 0.25 s doubling to 4 s): a Redis restart (AOF reload) pauses callers
    instead of failing them. Socket timeouts: a Redis that accepts but never answers must not hold a caller for
    ever (no command here blocks on the server side).
    """
    return {"decode_responses": True, "health_check_interval": 10, "socket_keepalive": True,
            "socket_connect_timeout": 10, "socket_timeout": 30,
            "retry": retry_class(ExponentialBackoff(cap=4.0, base=0.25), 12),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError]}


def _stored(job_id: str, raw: str | None) -> str:
    """A record's stored text, as GET returned it: JobNotFound when Redis has none."""
    if raw is None:
        raise JobNotFound(job_id)
    return raw


def _record(job_id: str, raw: str | None) -> Job:
    return Job.model_validate_json(_stored(job_id, raw))


def _page_index(status: JobStatus | None) -> str:
    return _key("jobs") if status is None else _status_index(status)


def _page_commands(pipe: Any, status: JobStatus | None, offset: int, limit: int) -> Any:
    """Queue on ``pipe`` (JobStore's or JobReader's) the two reads of a page: its records, newest first (a deleted
    one as None), then the size of its index.

    ``SORT_RO index BY nosort LIMIT ... GET kf:job:* DESC`` walks a sorted set in its own order, from the end (as
    ZREVRANGE does, ties included), and returns each member's record: one command in C, with the index's rank
    lookup making a page cost the same at 100 jobs as at 10,000. The Lua script that did this before spent
    172-179 us of Redis's CPU per page, copying 50 records into Lua strings and out again, against 27 us here
    (Redis's commandstats, 100 jobs): on a machine whose cores the API and its clients share, that time was taken
    from them. The two commands go as one pipeline, not one transaction, as JobStore's reads always did: a job
    created or deleted between them makes the total differ from the page by one.

    SORT and SORT_RO are in Redis's @dangerous category, which compose's ``worker`` user is denied; its ACL gives
    back SORT_RO alone (read-only). redis-py's ``sort_ro`` sends SORT: hence the command by name. A GET pattern
    reads keys a Redis cluster could not route; KTO Forge's Redis is one server, never a cluster.
    """
    index = _page_index(status)
    pipe.execute_command("SORT_RO", index, "BY", "nosort", "LIMIT", offset, limit, "GET", _key("job", "*"), "DESC")
    return pipe.zcard(index)


def _page(raws: list[str | None], status: JobStatus | None) -> list[Job]:
    """The records of one page, less those deleted (None) and, filtered, any not of ``status`` (JobStore.list)."""
    jobs = [Job.model_validate_json(raw) for raw in raws if raw]
    return [j for j in jobs if status is None or j.status == status]


class JobReader:
    """The API's reads of job records on its event loop (redis.asyncio), with JobStore's keys and retries.

    Through JobStore, each read of ``GET /v1/jobs/{id}`` went to a thread and back: under load the hand-off
    (a lock, a condition, the GIL passed twice) was 39 % of the API's samples (bench/profiles/api_*.txt).
    Awaited here, a Redis restart still pauses the request for up to ~30 s, without holding a thread or the
    loop. One per event loop: an asyncio connection belongs to the loop that opened it.
    """

    CLIENT_NAME = "ktoforge-api-reader"  # in Redis's CLIENT LIST: which connections are the API's readers

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.r = client
        self.answers = JobAnswers()  # page_json's and get_json's answers, by record text (ktoforge.job_json)

    @classmethod
    def from_url(cls, url: str) -> "JobReader":
        return cls(redis.asyncio.Redis.from_url(url, client_name=cls.CLIENT_NAME,
                                                **_client_options(redis.asyncio.retry.Retry)))

    async def get(self, job_id: str) -> Job:
        return _record(job_id, await self.r.get(_key("job", job_id)))

    async def get_json(self, job_id: str) -> str:
        """The record as the API answers it, ``Job.model_dump_json()``: its kept answer (ktoforge.job_json)."""
        return self.answers.answer(_stored(job_id, await self.r.get(_key("job", job_id))))[1]

    async def page_json(self, status: JobStatus | None, offset: int, limit: int) -> str:
        """JobStore.list's page, awaited, as the JSON of its ``JobPage``: each record parsed and written once while
        its stored text stays the same (ktoforge.job_json says why)."""
        async with self.r.pipeline(transaction=False) as pipe:
            raws, total = await _page_commands(pipe, status, offset, limit).execute()
        return self.answers.page(raws, status, total, offset, limit)


class JobStore:
    """Job records as JSON strings, indexes sorted by creation time, and one Redis stream per job."""

    def __init__(self, client: redis.Redis, event_stream_max_len: int | None = None) -> None:
        self.r = client
        self._add_event_once = client.register_script(ADD_EVENT_ONCE)
        self.event_stream_max_len = event_stream_max_len or get_settings().event_stream_max_len

    @classmethod
    def from_url(cls, url: str) -> "JobStore":
        return cls(redis.Redis.from_url(url, **_client_options(Retry)))

    # --- records -------------------------------------------------------------------------------
    def create(self, spec: JobCreate, idempotency_key: str | None = None,
               max_queued: int | None = None) -> tuple[Job, bool]:
        """Store a queued job; with an idempotency key, a retry returns the first job (created=False).
        ``max_queued``: QueueFull when that many jobs are queued already (_write_new says how it holds)."""
        now = time.time()
        job = Job(id=uuid.uuid4().hex, status=JobStatus.queued, created_at=now, updated_at=now,
                  history=[{"status": "queued", "time": now}], **spec.model_dump())
        if idempotency_key:
            ikey = _key("idem", idempotency_key)
            if not self.r.set(ikey, job.id, nx=True, ex=24 * 3600):
                existing = self.r.get(ikey)
                for _ in range(50):  # the first request may still be writing its record
                    if existing and self.r.exists(_key("job", existing)):
                        return self.get(existing), False
                    time.sleep(0.02)
                raise TransitionError("idempotency key is in use by a request that did not finish")
        try:
            self._write_new(job, max_queued)
        except QueueFull:
            if idempotency_key:
                self.r.delete(ikey)  # ours (set NX above), for a job never stored: a retry may try again
            raise
        return job, True

    def _write_new(self, job: Job, max_queued: int | None) -> None:
        """The new job's record, indexes and first event, in one transaction. With ``max_queued``, the queued
        count is read under WATCH of its index: a submit, start or cancel elsewhere between the count and the
        write makes the transaction retry, so concurrent submits cannot pass the cap together. Counted apart from
        the write, as the API did, 16 submits at once against a cap of 5 stored 7 to 9 jobs (five tries)."""
        index = _status_index(JobStatus.queued)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    if max_queued is not None:
                        pipe.watch(index)
                        if (queued := int(pipe.zcard(index))) >= max_queued:
                            raise QueueFull(queued)
                        pipe.multi()
                    pipe.set(_key("job", job.id), job.model_dump_json())
                    pipe.zadd(_key("jobs"), {job.id: job.created_at})
                    _index(pipe, job)
                    self.add_event(job.id, "state", {"status": "queued"}, client=pipe)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def get(self, job_id: str) -> Job:
        return _record(job_id, self.r.get(_key("job", job_id)))

    def list(self, status: JobStatus | None, offset: int, limit: int) -> tuple[list[Job], int]:
        """Newest first, one page read from the index of ``status`` (or of all jobs); the total from its size.

        The page's index entries and records are read by one command (``_page_commands``), and a record is written
        with its indexes in one transaction: a filtered page's records have its status. A record is still checked
        against the filter (``_page``), at no cost worth counting.
        """
        with self.r.pipeline(transaction=False) as pipe:
            raws, total = _page_commands(pipe, status, offset, limit).execute()
        return _page(raws, status), total

    def count(self, status: JobStatus) -> int:
        """How many jobs have this status (one ZCARD)."""
        return int(self.r.zcard(_status_index(status)))

    def queued_by_backend(self) -> dict[str, int]:
        """Jobs waiting for a worker, per backend (one ZCARD each, in one round trip)."""
        with self.r.pipeline(transaction=False) as pipe:
            for backend in BACKENDS:
                pipe.zcard(_queued_index(backend))
            return dict(zip(BACKENDS, map(int, pipe.execute())))

    def ensure_indexes(self, chunk: int = 500) -> int:
        """Build the status indexes of records stored before they existed; returns how many were indexed.

        Runs once per index version (the API calls it at start). Each chunk is indexed under WATCH of its
        records, so a transition landing meanwhile makes the chunk start over instead of leaving a stale entry.
        """
        if self.r.get(_key("index-version")) == INDEX_VERSION:
            return 0
        ids = self.r.zrange(_key("jobs"), 0, -1)
        for start in range(0, len(ids), chunk):
            keys = [_key("job", i) for i in ids[start: start + chunk]]
            with self.r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*keys)
                        raws = pipe.mget(keys)
                        pipe.multi()
                        for raw in filter(None, raws):
                            _index(pipe, Job.model_validate_json(raw))
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
        self.r.set(_key("index-version"), INDEX_VERSION)
        return len(ids)

    def update(self, job_id: str, **fields: Any) -> Job:
        """Change non-state fields (step, max_steps) atomically."""
        return self._mutate(job_id, lambda job: job.model_copy(update=fields))

    def transition(self, job_id: str, to: JobStatus, reason: str | None = None, **fields: Any) -> Job:
        """Move to ``to`` if the lifecycle allows it, recording the time and reason, and emit a state event."""
        entry = {"status": to.value, "time": time.time(), **({"reason": reason} if reason else {})}
        job = self._mutate(job_id, lambda job: apply_transition(job, to, entry, fields))
        data = {"status": to.value, **({"reason": reason} if reason else {}), **fields}
        self.add_event(job_id, "state", data)
        return job

    def resume(self, job_id: str, worker: str) -> Job:
        """Count another attempt at a job left running by a worker that died (running -> running)."""
        entry = {"status": "running", "time": time.time(), "reason": "resumed after worker loss"}

        def change(job: Job) -> Job:
            if _already_applied(job, entry):
                return job
            if job.status != JobStatus.running:
                raise TransitionError(f"job {job_id} is {job.status.value}; only a running job is resumed")
            return job.model_copy(update={"attempts": job.attempts + 1, "updated_at": entry["time"], "worker": worker,
                                          "history": [*job.history, entry]})

        job = self._mutate(job_id, change)
        self.add_event(job_id, "log", {"message": "resuming after worker loss", "attempt": job.attempts,
                                       "worker": worker})
        return job

    def _mutate(self, job_id: str, change: Any) -> Job:
        key = _key("job", job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(job_id)
                    before = Job.model_validate_json(raw)
                    job = change(before)
                    job.updated_at = max(job.updated_at, time.time())
                    pipe.multi()
                    pipe.set(key, job.model_dump_json())
                    if job.status != before.status:  # same transaction: record and indexes never disagree
                        _index(pipe, job)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    # --- cancellation ------------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> Job:
        """Queued jobs are cancelled at once; running ones get a flag their worker checks every step."""
        job = self.get(job_id)
        if job.status == JobStatus.queued:
            try:
                return self.transition(job_id, JobStatus.cancelled, reason="cancelled by user before it started")
            except TransitionError:
                job = self.get(job_id)  # a worker picked it up meanwhile: fall through to the flag
        if job.status in TERMINAL:
            raise TransitionError(f"job {job_id} already {job.status.value}")
        self.r.set(_key("cancel", job_id), "1")
        self.add_event(job_id, "log", {"message": "cancel requested"})
        return job

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(_key("cancel", job_id)))

    # --- leases and heartbeats --------------------------------------------------------------------------
    def acquire_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """One worker trains a job at a time: a lease that expires if its owner stops renewing it."""
        return bool(self.r.set(_key("lease", job_id), owner, nx=True, px=int(ttl_s * 1000)))

    def renew_lease(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Extend our lease and record a heartbeat; False if someone else holds it now."""
        script = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                  "redis.call('pexpire', KEYS[1], ARGV[2]); redis.call('set', KEYS[2], ARGV[3]); return 1 "
                  "else return 0 end")
        ok = self.r.eval(script, 2, _key("lease", job_id), _key("heartbeat", job_id), owner,
                         int(ttl_s * 1000), time.time())
        return bool(ok)

    def release_lease(self, job_id: str, owner: str) -> None:
        script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
        self.r.eval(script, 1, _key("lease", job_id), owner)

    def lease_holder(self, job_id: str) -> str | None:
        return self.r.get(_key("lease", job_id))

    def try_lock(self, name: str, ttl_s: float) -> bool:
        """A lock nobody releases: whoever sets it first holds it for ``ttl_s`` (the reaper's one round among
        several API replicas)."""
        return bool(self.r.set(_key("lock", name), "1", nx=True, px=int(ttl_s * 1000)))

    def heartbeat_age(self, job_id: str) -> float | None:
        raw = self.r.get(_key("heartbeat", job_id))
        return None if raw is None else time.time() - float(raw)

    # --- worker presence -----------------------------------------------------------------------------
    def announce_worker(self, node: str, queue: str, info: dict[str, Any], ttl_s: float) -> None:
        """Say that ``node`` consumes ``queue``, for ``ttl_s`` seconds (its worker refreshes it sooner).

        A key per node and queue that Redis expires itself (no clock of ours compared with another machine's),
        listed in one set so that readers find the keys without scanning.
        """
        key = _key("worker", queue, node)
        value = json.dumps({**info, "node": node, "queue": queue, "time": time.time()})
        with self.r.pipeline() as pipe:
            pipe.set(key, value, px=int(ttl_s * 1000)).sadd(_key("workers"), key).execute()

    def withdraw_worker(self, node: str, queues: list[str]) -> None:
        """A worker that stops says so at once instead of waiting for its keys to expire."""
        keys = [_key("worker", queue, node) for queue in queues]
        if keys:
            with self.r.pipeline() as pipe:
                pipe.delete(*keys).srem(_key("workers"), *keys).execute()

    def workers(self) -> dict[str, list[dict[str, Any]]]:
        """Live workers per queue (their announced info, node-sorted); expired entries are dropped."""
        keys = sorted(self.r.smembers(_key("workers")))
        values = self.r.mget(keys) if keys else []
        if gone := [k for k, v in zip(keys, values) if v is None]:
            self.r.srem(_key("workers"), *gone)
        found: dict[str, list[dict[str, Any]]] = {}
        for value in filter(None, values):
            info = json.loads(value)
            found.setdefault(info["queue"], []).append(info)
        return {queue: sorted(infos, key=lambda i: i["node"]) for queue, infos in found.items()}

    # --- events --------------------------------------------------------------------------------------
    def add_event(self, job_id: str, type_: str, data: dict[str, Any], client: Any = None) -> str:
        """Append to the job's stream exactly once, even when a Redis restart makes the client retry.

        ``client``: a pipeline to queue the append in (then its result comes from the pipeline's execute).
        """
        keys = [_key("events", job_id), _key("event-once", uuid.uuid4().hex)]
        args = [type_, time.time(), json.dumps(data), self.event_stream_max_len]
        return self._add_event_once(keys=keys, args=args, client=client or self.r)

    def events(self, job_id: str, after: str | None, limit: int) -> list[Event]:
        """Events strictly after the cursor ``after`` (a stream id, see check_cursor), oldest first."""
        if after and check_cursor(after) == (MAX_STREAM_ID, MAX_STREAM_ID):
            return []  # nothing can follow the largest id (and Redis refuses an empty exclusive range)
        start = f"({after}" if after else "-"
        rows = self.r.xrange(_key("events", job_id), min=start, max="+", count=limit)
        return [_event(eid, fields) for eid, fields in rows]

    def iter_metrics(self, job_id: str) -> Iterator[dict[str, Any]]:
        for event in self.events(job_id, None, 1_000_000):
            if event.type == "metrics":
                yield event.data


def check_cursor(cursor: str) -> tuple[int, int]:
    """The two numbers of a stream id ``<ms>-<seq>``; ValueError naming the rule when Redis would refuse it."""
    ms, sep, seq = cursor.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        raise ValueError(f"an event id is two numbers joined by '-' (e.g. 1700000000000-0), got {cursor[:40]!r}")
    parts = int(ms), int(seq)
    if max(parts) > MAX_STREAM_ID:
        raise ValueError(f"each number of an event id is at most {MAX_STREAM_ID}, got {cursor[:60]!r}")
    return parts


def _index(pipe: Any, job: Job) -> None:
    """Queue the index writes that put ``job`` under its status only (idempotent: a retry writes the same)."""
    for status in JobStatus:
        if status == job.status:
            pipe.zadd(_status_index(status), {job.id: job.created_at})
        else:
            pipe.zrem(_status_index(status), job.id)
    for backend in BACKENDS:
        if job.status == JobStatus.queued and backend == job.backend:
            pipe.zadd(_queued_index(backend), {job.id: job.created_at})
        else:
            pipe.zrem(_queued_index(backend), job.id)


def _already_applied(job: Job, entry: dict[str, Any]) -> bool:
    """Our own change already landed: Redis ran the write and lost only its reply, and this is the client's
    retry (redis-py raises WatchError, and _mutate reads the record again). The entry's time identifies it."""
    return bool(job.history) and job.history[-1] == entry


def apply_transition(job: Job, to: JobStatus, entry: dict[str, Any], fields: dict[str, Any]) -> Job:
    """The job after the state change that ``entry`` records (once: applying it again changes nothing)."""
    if _already_applied(job, entry):
        return job
    if to not in ALLOWED[job.status]:
        raise TransitionError(f"job {job.id} is {job.status.value}; it cannot become {to.value}")
    now = entry["time"]
    update: dict[str, Any] = {"status": to, "updated_at": now, "reason": entry.get("reason"), **fields,
                              "history": [*job.history, entry]}
    if to == JobStatus.running:
        update.setdefault("started_at", job.started_at or now)
        update["attempts"] = job.attempts + 1
    if to in TERMINAL:
        update["finished_at"] = now
    return job.model_copy(update=update)


def _event(eid: str, fields: dict[str, str]) -> Event:
    return Event(id=eid, type=fields["type"], time=float(fields["time"]), data=json.loads(fields["data"]))

"""Durable job state in Redis: records, checked transitions, per-job event streams, cancel flags, leases.

The one module that owns job state. Workers write here directly (not through the API) so that events
and transitions survive an API restart; the API reads here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ktoforge.schemas import Event, Job, JobCreate, JobStatus

PREFIX = "kf"
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
ADD_EVENT_ONCE = """
local done = redis.call('GET', KEYS[2])
if done then return done end
local id = redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'time', ARGV[2], 'data', ARGV[3])
redis.call('SET', KEYS[2], id, 'EX', 600)
return id
"""


class TransitionError(RuntimeError):
    """A state change the lifecycle forbids (e.g. cancelling a finished job)."""


class JobNotFound(KeyError):
    pass


def _key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


class JobStore:
    """Job records as JSON strings, an index sorted by creation time, and one Redis stream per job."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._add_event_once = client.register_script(ADD_EVENT_ONCE)

    @classmethod
    def from_url(cls, url: str) -> "JobStore":
        # Retry with backoff for ~30 s: a Redis restart (AOF reload) pauses callers instead of failing them.
        retry = Retry(ExponentialBackoff(cap=4.0, base=0.25), retries=12)
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=10, socket_keepalive=True,
                                        retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError,
                                                                     redis.BusyLoadingError]))

    # --- records -------------------------------------------------------------------------------
    def create(self, spec: JobCreate, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store a queued job; with an idempotency key, a retry returns the first job (created=False)."""
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
        pipe = self.r.pipeline()
        pipe.set(_key("job", job.id), job.model_dump_json())
        pipe.zadd(_key("jobs"), {job.id: now})
        self.add_event(job.id, "state", {"status": "queued"}, client=pipe)
        pipe.execute()
        return job, True

    def get(self, job_id: str) -> Job:
        raw = self.r.get(_key("job", job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(raw)

    def list(self, status: JobStatus | None, offset: int, limit: int) -> tuple[list[Job], int]:
        """Newest first. Filtering by status scans the index (fine for a single user's job count)."""
        ids = self.r.zrevrange(_key("jobs"), 0, -1)
        raws = self.r.mget([_key("job", i) for i in ids]) if ids else []
        jobs = [Job.model_validate_json(raw) for raw in raws if raw]
        if status is not None:
            jobs = [j for j in jobs if j.status == status]
        return jobs[offset: offset + limit], len(jobs)

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
                    job = change(Job.model_validate_json(raw))
                    job.updated_at = max(job.updated_at, time.time())
                    pipe.multi()
                    pipe.set(key, job.model_dump_json())
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

    def heartbeat_age(self, job_id: str) -> float | None:
        raw = self.r.get(_key("heartbeat", job_id))
        return None if raw is None else time.time() - float(raw)

    # --- events --------------------------------------------------------------------------------------
    def add_event(self, job_id: str, type_: str, data: dict[str, Any], client: Any = None) -> str:
        """Append to the job's stream exactly once, even when a Redis restart makes the client retry.

        ``client``: a pipeline to queue the append in (then its result comes from the pipeline's execute).
        """
        keys = [_key("events", job_id), _key("event-once", uuid.uuid4().hex)]
        return self._add_event_once(keys=keys, args=[type_, time.time(), json.dumps(data)], client=client or self.r)

    def events(self, job_id: str, after: str | None, limit: int) -> list[Event]:
        """Events strictly after the cursor ``after`` (a stream id), oldest first."""
        start = f"({after}" if after else "-"
        rows = self.r.xrange(_key("events", job_id), min=start, max="+", count=limit)
        return [_event(eid, fields) for eid, fields in rows]

    def wait_events(self, job_id: str, after: str | None, block_ms: int) -> list[Event]:
        """Block until events newer than ``after`` arrive (SSE)."""
        res = self.r.xread({_key("events", job_id): after or "0-0"}, block=block_ms, count=500)
        return [_event(eid, fields) for _, rows in res for eid, fields in rows]

    def iter_metrics(self, job_id: str) -> Iterator[dict[str, Any]]:
        for event in self.events(job_id, None, 1_000_000):
            if event.type == "metrics":
                yield event.data


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

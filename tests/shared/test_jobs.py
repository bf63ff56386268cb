"""The job store's lifecycle rules, idempotency, leases and events, on a real redis-server."""

from __future__ import annotations

import pytest

from ktoforge.jobs import JobStore, QueueFull, TransitionError, apply_transition
from ktoforge.schemas import JobCreate, JobPage, JobStatus

SPEC = JobCreate(dataset_id="a" * 64)


@pytest.fixture()
def store(redis_client, kf_env) -> JobStore:
    return JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])


def test_lifecycle_transitions_are_checked_and_timestamped(store):
    job, created = store.create(SPEC)
    assert created and job.status == JobStatus.queued
    store.transition(job.id, JobStatus.running)
    done = store.transition(job.id, JobStatus.succeeded)
    assert done.attempts == 1 and done.finished_at >= done.started_at
    assert [h["status"] for h in done.history] == ["queued", "running", "succeeded"]
    with pytest.raises(TransitionError, match="succeeded; it cannot become running"):
        store.transition(job.id, JobStatus.running)
    states = [e.data["status"] for e in store.events(job.id, None, 100) if e.type == "state"]
    assert states == ["queued", "running", "succeeded"]


def test_idempotency_key_returns_first_job(store):
    first, created = store.create(SPEC, idempotency_key="k1")
    again, created_again = store.create(SPEC, idempotency_key="k1")
    assert created and not created_again and again.id == first.id
    assert store.list(None, 0, 100)[1] == 1


def test_the_queued_cap_holds_for_submits_at_once_and_frees_a_refused_idempotency_key(store, kf_env):
    """16 submits at once, each with its own client, against a cap of 5: exactly 5 are stored (the count is
    read in the transaction that writes). A key refused for a full queue is not kept: its retry, once there
    is room, creates the job."""
    from concurrent.futures import ThreadPoolExecutor

    def submit(_: int) -> str:
        try:
            return "created" if JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"]).create(SPEC, max_queued=5)[1] else "?"
        except QueueFull as full:
            assert full.queued == 5
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(submit, range(16)))
    assert sorted(outcomes) == ["created"] * 5 + ["refused"] * 11
    assert store.count(JobStatus.queued) == 5 and store.list(None, 0, 100)[1] == 5
    with pytest.raises(QueueFull):
        store.create(SPEC, idempotency_key="k-full", max_queued=5)
    store.transition(store.list(JobStatus.queued, 0, 1)[0][0].id, JobStatus.running)
    job, created = store.create(SPEC, idempotency_key="k-full", max_queued=5)
    assert created and store.count(JobStatus.queued) == 5


def test_cancel_queued_is_immediate_running_sets_flag(store):
    queued, _ = store.create(SPEC)
    assert store.request_cancel(queued.id).status == JobStatus.cancelled
    running, _ = store.create(SPEC)
    store.transition(running.id, JobStatus.running)
    store.request_cancel(running.id)
    assert store.cancel_requested(running.id)
    with pytest.raises(TransitionError):
        store.request_cancel(queued.id)


def test_lease_is_exclusive_and_renewable(store):
    job, _ = store.create(SPEC)
    assert store.acquire_lease(job.id, "w1", 5)
    assert not store.acquire_lease(job.id, "w2", 5)
    assert store.renew_lease(job.id, "w1", 5) and not store.renew_lease(job.id, "w2", 5)
    assert store.heartbeat_age(job.id) < 1
    store.release_lease(job.id, "w1")
    assert store.acquire_lease(job.id, "w2", 5)


def test_event_cursor_pages(store):
    job, _ = store.create(SPEC)
    for step in range(1, 6):
        store.add_event(job.id, "metrics", {"step": step})
    first = store.events(job.id, None, 3)
    rest = store.events(job.id, first[-1].id, 100)
    assert [e.data.get("step") for e in first + rest] == [None, 1, 2, 3, 4, 5]




def test_an_event_resent_after_a_lost_reply_is_stored_once(store):
    """What the client's retry sends when Redis went down after running XADD but before answering (seen in
    the Redis-restart fault test as a step reported twice): the same script, keys and token again."""
    job, _ = store.create(SPEC)
    keys = [f"kf:events:{job.id}", "kf:event-once:resent-token"]
    args = ["metrics", 1.0, '{"step": 8, "loss": 0.5}']
    first = store._add_event_once(keys=keys, args=args)
    assert store._add_event_once(keys=keys, args=args) == first
    metrics = [e for e in store.events(job.id, None, 100) if e.type == "metrics"]
    assert [(e.id, e.data["step"]) for e in metrics] == [(first, 8)]
    assert 0 < store.r.ttl("kf:event-once:resent-token") <= 600  # tokens expire: no growth


def test_a_transition_applied_again_after_a_lost_reply_changes_nothing(store):
    """The retry of a record write whose reply Redis lost re-reads the record and finds its own change: it
    must neither fail (succeeded -> succeeded is not a transition) nor count an attempt twice."""
    job, _ = store.create(SPEC)
    running = store.transition(job.id, JobStatus.running)
    entry = {"status": "succeeded", "time": 1234.5}
    done = apply_transition(running, JobStatus.succeeded, entry, {})
    assert apply_transition(done, JobStatus.succeeded, entry, {}) == done
    with pytest.raises(TransitionError):  # a different, later request still obeys the rules
        apply_transition(done, JobStatus.succeeded, {**entry, "time": 1234.6}, {})
    again = apply_transition(running, JobStatus.running, running.history[-1], {})
    assert again.attempts == running.attempts == 1


def test_reader_on_an_event_loop_reads_what_the_store_wrote(store, kf_env):
    """JobReader (the API's awaited reads) and JobStore agree on records, pages, filters and missing ids: the
    reader's page JSON is the JobPage of the store's page, its record JSON the Job's, before and after a change."""
    import asyncio

    from ktoforge.jobs import JobNotFound, JobReader, _key

    jobs = [store.create(SPEC)[0] for _ in range(6)]
    store.transition(jobs[1].id, JobStatus.running)
    store.r.delete(_key("job", jobs[4].id))  # in the indexes, its record gone: left out of a page, as by list

    async def read() -> None:
        reader = JobReader.from_url(kf_env["KTOFORGE_REDIS_URL"])
        try:
            assert await reader.get(jobs[1].id) == store.get(jobs[1].id)
            for status, offset, limit in [(None, 0, 3), (None, 3, 3), (None, 6, 3), (JobStatus.queued, 0, 10),
                                          (JobStatus.running, 0, 10), (JobStatus.failed, 0, 10)]:
                items, total = store.list(status, offset, limit)
                page = JobPage(items=items, total=total, offset=offset, limit=limit)
                assert await reader.page_json(status, offset, limit) == page.model_dump_json()
            with pytest.raises(JobNotFound):
                await reader.get("missing")
            assert await reader.get_json(jobs[0].id) == store.get(jobs[0].id).model_dump_json()
            store.transition(jobs[0].id, JobStatus.running)  # a changed record: a new text, a new answer
            assert await reader.get_json(jobs[0].id) == store.get(jobs[0].id).model_dump_json()
            for missing in ("missing", jobs[4].id):
                with pytest.raises(JobNotFound):
                    await reader.get_json(missing)
        finally:
            await reader.r.aclose()

    asyncio.run(read())
    assert store.list(JobStatus.running, 0, 10)[0][0].id == jobs[1].id


def test_the_job_store_runs_as_compose_worker_user(store, redis_server):
    """Every read and write of the store, as a user with the ACL rules compose gives ``worker`` (read from
    docker-compose.yml): a command the store starts to use that the ACL denies (SORT_RO is @dangerous) fails
    here, without Docker."""
    import asyncio
    import re

    from ktoforge.jobs import JobReader
    from tests.conftest import ROOT

    compose = (ROOT / "docker-compose.yml").read_text()
    rules = re.search(r"user worker on >\$\$KTOFORGE_REDIS_WORKER_PASSWORD (.+)", compose).group(1).split()
    assert "-@dangerous" in rules
    store.r.acl_setuser("compose-worker", enabled=True, reset=True, passwords=["+acl-test-pass"])
    store.r.execute_command("ACL", "SETUSER", "compose-worker", *rules)
    url = f"redis://compose-worker:acl-test-pass@127.0.0.1:{redis_server.port}/0"
    worker = JobStore.from_url(url)
    jobs = [worker.create(SPEC)[0] for _ in range(3)]
    worker.transition(jobs[0].id, JobStatus.running)
    worker.add_event(jobs[0].id, "log", {"message": "hello"})
    assert [j.id for j in worker.list(None, 0, 2)[0]] == [jobs[2].id, jobs[1].id]
    assert worker.list(JobStatus.running, 0, 10) == ([worker.get(jobs[0].id)], 1)
    assert worker.count(JobStatus.queued) == 2 and len(worker.events(jobs[0].id, None, 10)) == 3

    async def page() -> str:
        reader = JobReader.from_url(url)
        try:
            return await reader.page_json(JobStatus.queued, 0, 10)
        finally:
            await reader.r.aclose()

    items, total = worker.list(JobStatus.queued, 0, 10)
    assert asyncio.run(page()) == JobPage(items=items, total=total, offset=0, limit=10).model_dump_json()


def test_a_page_is_the_index_read_newest_first_ties_and_gaps_included(store):
    """JobStore.list and JobReader.page_json share their commands (SORT_RO ... BY nosort ... DESC), so this checks
    them against ZREVRANGE of the index: the same jobs in the same order at every offset, equal creation times
    (ties, ordered by id as ZREVRANGE orders them) and a deleted record (left out) included."""
    from ktoforge.jobs import _key

    jobs = [store.create(SPEC)[0] for _ in range(7)]
    store.r.zadd(_key("jobs"), {j.id: 1000.0 for j in jobs[2:6]})  # four jobs created at the same instant
    store.r.delete(_key("job", jobs[3].id))
    index = store.r.zrevrange(_key("jobs"), 0, -1)
    assert len(index) == 7
    for offset, limit in [(0, 7), (0, 3), (2, 3), (4, 2), (6, 5), (7, 1)]:
        items, total = store.list(None, offset, limit)
        assert total == 7
        assert [j.id for j in items] == [i for i in index[offset:offset + limit] if i != jobs[3].id]

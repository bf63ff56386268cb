"""The reaper (in the API) requeues a job whose worker vanished, and fails it after max_attempts; real Redis."""

from __future__ import annotations

import pytest

from ktoforge.jobs import JobStore
from ktoforge.queue import make_celery
from ktoforge.schemas import JobCreate, JobStatus
from ktoforge.settings import get_settings
from ktoforge_api.reaper import reap_once

SPEC = JobCreate(dataset_id="a" * 64)


@pytest.fixture()
def store(redis_client, kf_env) -> JobStore:
    return JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])


def test_reaper_requeues_stale_job_then_fails_after_max_attempts(store, redis_client, kf_env):
    settings = get_settings()
    app = make_celery()
    job, _ = store.create(SPEC)
    store.transition(job.id, JobStatus.running)
    store.acquire_lease(job.id, "w1", 60)
    assert reap_once(store, app, settings) == []  # lease held: its worker is alive
    redis_client.delete(f"kf:lease:{job.id}", "kf:lock:reaper")
    assert reap_once(store, app, settings) == [job.id]
    assert store.get(job.id).status == JobStatus.queued
    assert redis_client.llen("cuda") == 1  # a fresh message for the next worker
    for _ in range(settings.max_attempts - 1):  # attempts 2 .. max: the last one fails for good
        store.transition(job.id, JobStatus.running)
        redis_client.delete("kf:lock:reaper")
        reap_once(store, app, settings)
    failed = store.get(job.id)
    assert failed.status == JobStatus.failed and f"lost {settings.max_attempts} times" in failed.reason
    assert redis_client.llen("cuda") == settings.max_attempts - 1


def test_one_round_per_interval_among_replicas(store, kf_env):
    """Two API replicas share Redis: the lock lets only the first reap in a round."""
    settings = get_settings()
    assert store.try_lock("reaper", settings.reaper_interval_s)
    assert reap_once(store, make_celery(), settings) == []

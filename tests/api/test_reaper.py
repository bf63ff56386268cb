"""The reaper (in the API) requeues a job whose worker vanished, fails it after max_attempts, and fails an
evaluation whose worker stopped renewing its claim; real Redis."""

from __future__ import annotations

import time

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


def test_an_evaluation_whose_worker_stopped_renewing_its_claim_is_failed(store, redis_client, kf_env):
    """A running evaluation keeps its claim while its worker renews it; once the claim lapses (the worker was
    killed), the reaper fails it with a reason, once, and leaves the others alone."""
    from ktoforge.evaluation.records import EvaluationCreate, EvaluationStatus, EvaluationStore
    from ktoforge_api.reaper import reap_evaluations

    settings = get_settings()
    evals = EvaluationStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    job, _ = store.create(SPEC)
    lost, alive, done = (evals.create(job.id, EvaluationCreate()) for _ in range(3))
    for ev, token in ((lost, "w1:a"), (alive, "w2:b"), (done, "w3:c")):
        assert evals.claim(ev.id, token, 60)
        evals.update(ev.id, status=EvaluationStatus.running, worker=token.split(":")[0])
    evals.update(done.id, status=EvaluationStatus.succeeded)
    assert set(evals.running_ids()) == {lost.id, alive.id}  # the index follows the status
    assert reap_evaluations(store, evals, settings) == []  # every claim held: the workers are alive

    assert not evals.renew_claim(lost.id, "w2:b", 60)  # only its holder renews a claim
    assert evals.renew_claim(lost.id, "w1:a", 0.05)  # its last renewal: then the worker is gone
    time.sleep(0.2)
    assert evals.claim_holder(lost.id) is None and not evals.renew_claim(lost.id, "w1:a", 60)  # lapsed for good
    redis_client.delete("kf:lock:evaluation-reaper")
    assert reap_evaluations(store, evals, settings) == [lost.id]
    failed = evals.get(lost.id)
    assert failed.status == EvaluationStatus.failed and "its worker w1 was lost" in failed.reason
    assert "queue the evaluation again" in failed.reason
    assert evals.get(alive.id).status == EvaluationStatus.running and evals.get(done.id).status == "succeeded"
    assert evals.running_ids() == [alive.id]
    redis_client.delete("kf:lock:evaluation-reaper")
    assert reap_evaluations(store, evals, settings) == []  # once

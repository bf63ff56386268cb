"""Jobs: validation, a real Celery message in the backend's Redis list, listing, cancel, idempotency."""

from __future__ import annotations

import base64
import json

import redis
from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobStatus

SMALL = {"max_steps": 2, "max_length": 128}


def queue_messages(redis_client: redis.Redis, queue: str) -> list[dict]:
    """Kombu's Redis transport keeps a queue's messages in a list named after it."""
    return [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]


def task_args(message: dict) -> list:
    return json.loads(base64.b64decode(message["body"]))[0]


def test_create_queues_a_real_message(client: TestClient, dataset_id: str, redis_client: redis.Redis):
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": SMALL})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["backend"] == "cuda" and job["model"] == "builtin:tiny-mistral"
    assert job["hyperparameters"]["max_steps"] == 2
    [message] = queue_messages(redis_client, "cuda")
    assert message["headers"]["task"] == "ktoforge.train"
    assert task_args(message) == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]

    mlx = client.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx"}).json()
    assert [task_args(m) for m in queue_messages(redis_client, "mlx")] == [[mlx["id"]]]
    assert len(queue_messages(redis_client, "cuda")) == 1


def test_create_rejects_unknown_dataset_and_model(client: TestClient, dataset_id: str, redis_client):
    r = client.post("/v1/jobs", json={"dataset_id": "f" * 64})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset_id"]
    for model in ("builtin:gpt-9", "not a model", "/nonexistent/model", "a/b/c"):
        r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": model})
        assert r.status_code == 422, model
        assert r.json()["detail"][0]["loc"] == ["body", "model"]
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": {"per_device_train_batch_size": 1}})
    assert r.status_code == 422
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "mistralai/Mistral-7B-v0.3"}).status_code == 201
    assert client.get("/v1/jobs").json()["total"] == 1
    assert len(queue_messages(redis_client, "cuda")) == 1


def test_local_model_folder_is_accepted(client: TestClient, dataset_id: str, tiny_model_dir):
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": str(tiny_model_dir)})
    assert r.status_code == 201, r.text


def test_idempotency_key_returns_the_first_job(client: TestClient, dataset_id: str, redis_client):
    body = {"dataset_id": dataset_id}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert len(queue_messages(redis_client, "cuda")) == 2  # the retry did not enqueue twice


def test_list_filter_and_paginate(client: TestClient, dataset_id: str):
    ids = [client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert (page["total"], page["offset"], page["limit"]) == (5, 0, 2)
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]  # newest first
    rest = client.get("/v1/jobs", params={"offset": 2, "limit": 10}).json()
    assert [j["id"] for j in rest["items"]] == ids[::-1][2:]
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert cancelled["total"] == 1 and cancelled["items"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 4
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_filtered_pages_come_from_the_status_index(client: TestClient, dataset_id: str, redis_client, kf_env):
    """A filtered page reads only its own records (ZREVRANGE of the status index), and a transition moves a job
    between indexes in the same transaction as its record; the indexes of records stored before they existed
    are built once (ensure_indexes)."""
    ids = [client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"] for _ in range(6)]
    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    for job_id in ids[:3]:
        store.transition(job_id, JobStatus.running)
    store.transition(ids[0], JobStatus.succeeded)
    page = client.get("/v1/jobs", params={"status": "running", "offset": 1, "limit": 1}).json()
    assert page["total"] == 2 and [j["id"] for j in page["items"]] == [ids[1]]
    assert store.count(JobStatus.queued) == 3 and store.queued_by_backend() == {"cuda": 3, "mlx": 0}
    assert redis_client.zrange("kf:jobs:succeeded", 0, -1) == [ids[0]]

    redis_client.delete(*redis_client.keys("kf:jobs:*"), "kf:index-version")  # as stored by the old version
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 0
    assert store.ensure_indexes() == 6 and store.ensure_indexes() == 0  # once
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in queued["items"]] == ids[:2:-1]


def test_cancel_queued_then_conflict(client: TestClient, dataset_id: str):
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["reason"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_unknown_job_and_auth(client: TestClient, anon: TestClient, worker: TestClient):
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert client.post("/v1/jobs/nope/cancel").status_code == 404
    assert anon.get("/v1/jobs").status_code == 401
    assert worker.get("/v1/jobs").status_code == 401  # the worker token is not a user key
    assert anon.post("/v1/jobs", json={}).status_code == 401


def test_shutdown_closes_the_job_readers_connections(kf_env, redis_client):
    """The app's shutdown closes the JobReader its GET routes read through (one per event loop), instead of
    leaving its connections to the garbage collector."""
    from ktoforge.jobs import JobReader
    from tests.api.conftest import USER, make_client

    def readers() -> set[str]:  # other tests' clients without a lifespan may have left theirs, for now
        return {c["id"] for c in redis_client.client_list() if c["name"] == JobReader.CLIENT_NAME}

    before = readers()
    with make_client(USER) as c:
        assert c.get("/v1/jobs").status_code == 200 and c.get(f"/v1/jobs/{'0' * 32}").status_code == 404
        ours = readers() - before
        assert ours
    assert not ours & readers()

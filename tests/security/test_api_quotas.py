"""Finding 5: no quotas. A job of absurd size, a huge JSON body, unbounded queued jobs, event streams without
MAXLEN and unbounded SSE watchers were all accepted. Each bound is a setting (shared/ktoforge/settings.py)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore
from ktoforge.settings import get_settings
from tests.api.conftest import USER, LiveApi
from tests.api.test_live import submit_job

ABSURD = {"hyperparameters": {"max_length": 32768, "per_device_train_batch_size": 256,
                              "gradient_accumulation_steps": 1024, "max_steps": 1_000_000},
          "lora": {"r": 1024}}


def _settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"KTOFORGE_{name.upper()}", value)
    get_settings.cache_clear()


def test_an_absurd_job_is_refused_naming_each_bound(client: TestClient, dataset_id: str, redis_client):
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, **ABSURD})
    assert r.status_code == 422, r.text
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert "KTOFORGE_MAX_TOKENS_PER_STEP" in errors[("body", "hyperparameters")]
    assert "8589934592" in errors[("body", "hyperparameters")]  # 256 × 32768 × 1024 tokens per step
    assert "KTOFORGE_MAX_STEPS" in errors[("body", "hyperparameters", "max_steps")]
    assert "KTOFORGE_MAX_LORA_R" in errors[("body", "lora", "r")]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_target_modules_are_bounded_in_count_and_length(client: TestClient, dataset_id: str):
    many = client.post("/v1/jobs", json={"dataset_id": dataset_id, "lora": {"target_modules": ["q_proj"] * 65}})
    assert many.status_code == 422 and "KTOFORGE_MAX_TARGET_MODULES" in many.text, many.text
    long = client.post("/v1/jobs", json={"dataset_id": dataset_id, "lora": {"target_modules": ["q" * 300]}})
    assert long.status_code == 422 and "at most 128 characters" in long.text, long.text


def test_a_huge_json_body_is_refused_before_it_is_parsed(client: TestClient, dataset_id: str, redis_client):
    body = json.dumps({"dataset_id": dataset_id, "lora": {"target_modules": ["q_proj"] * 1_000_000}})
    assert len(body) > 9_000_000
    r = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "KTOFORGE_MAX_JSON_BODY_KB" in r.json()["detail"], r.text
    chunked = client.post("/v1/jobs", content=iter([body[:5_000_000].encode(), body[5_000_000:].encode()]))
    assert chunked.status_code == 413, chunked.text  # no Content-Length: counted while it arrives
    assert max((len(redis_client.get(k) or "") for k in redis_client.keys("kf:job:*")), default=0) < 100_000


def test_queued_jobs_are_capped(client: TestClient, dataset_id: str, monkeypatch: pytest.MonkeyPatch):
    _settings(monkeypatch, max_queued_jobs="3")
    codes = [client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429], codes
    refused = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert "KTOFORGE_MAX_QUEUED_JOBS" in refused.json()["detail"], refused.text
    first = client.get("/v1/jobs").json()["items"][-1]["id"]
    client.post(f"/v1/jobs/{first}/cancel")
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 201  # room again


def test_event_streams_are_trimmed(kf_env, redis_client, monkeypatch):
    _settings(monkeypatch, event_stream_max_len="100")
    store = JobStore(redis.Redis.from_url(kf_env["KTOFORGE_REDIS_URL"], decode_responses=True))
    for step in range(1000):
        store.add_event("a" * 32, "metrics", {"step": step})
    kept = redis_client.xlen("kf:events:" + "a" * 32)
    assert 100 <= kept < 300, kept  # approximate trimming (MAXLEN ~) keeps at least the bound
    assert store.events("a" * 32, None, 10_000)[-1].data == {"step": 999}


@pytest.fixture()
def capped_api(kf_env, redis_client, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> LiveApi:
    """A real uvicorn (TestClient cannot hold a stream open) allowing 2 SSE connections per key."""
    _settings(monkeypatch, max_sse_per_key="2")
    return request.getfixturevalue("live_api")


def test_sse_connections_per_key_are_capped(capped_api: LiveApi, reference_dataset):
    job = submit_job(capped_api.url, reference_dataset)
    sse = {"Accept": "text/event-stream"}
    with httpx.Client(base_url=capped_api.url, headers=USER, timeout=30) as c:
        with c.stream("GET", f"/v1/jobs/{job}/events", headers=sse) as one, \
                c.stream("GET", f"/v1/jobs/{job}/events", headers=sse) as two:
            assert one.status_code == two.status_code == 200
            third = c.get(f"/v1/jobs/{job}/events", headers=sse)
            assert third.status_code == 429 and "KTOFORGE_MAX_SSE_PER_KEY" in third.json()["detail"], third.text
            assert c.get(f"/v1/jobs/{job}/events").status_code == 200  # JSON pages are not streams
        for _ in range(50):  # closed streams free their slots (the server notices the disconnect)
            with c.stream("GET", f"/v1/jobs/{job}/events", headers=sse) as again:
                if again.status_code == 200:
                    break
            time.sleep(0.1)
        assert again.status_code == 200

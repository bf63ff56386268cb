"""Events: JSON pages with a cursor, and SSE that resumes from Last-Event-ID and ends with the job."""

from __future__ import annotations

import json
import threading
import time

from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings

SSE = {"Accept": "text/event-stream"}


def run_job(store: JobStore, job_id: str, steps: int) -> None:
    """What a worker writes: running, one metrics event per step, succeeded."""
    store.transition(job_id, JobStatus.running)
    for step in range(1, steps + 1):
        store.add_event(job_id, "metrics", {"step": step, "max_steps": steps, "loss": 1.0 / step})
    store.transition(job_id, JobStatus.succeeded)


def read_sse(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    """Every event of the stream until the server ends it."""
    events, current = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**SSE, **(headers or {})}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith((":", "retry:")):
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def new_job(client: TestClient, dataset_id: str) -> tuple[JobStore, str]:
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()
    return JobStore.from_url(get_settings().redis_url), job["id"]


def test_json_pages_follow_the_cursor(client: TestClient, dataset_id: str):
    store, job_id = new_job(client, dataset_id)
    run_job(store, job_id, steps=5)  # 1 queued + 1 running + 5 metrics + 1 succeeded
    url = f"/v1/jobs/{job_id}/events"
    seen, after = [], None
    while True:
        page = client.get(url, params={"limit": 3, **({"after": after} if after else {})}).json()
        if not page["items"]:
            break
        seen += page["items"]
        after = page["next_after"]
    assert [e["type"] for e in seen] == ["state", "state"] + ["metrics"] * 5 + ["state"]
    assert [e["data"].get("status") for e in seen if e["type"] == "state"] == ["queued", "running", "succeeded"]
    assert [e["data"]["step"] for e in seen if e["type"] == "metrics"] == [1, 2, 3, 4, 5]
    assert len({e["id"] for e in seen}) == 8
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get(url, params={"limit": 10001}).status_code == 422
    assert client.get(url, params={"after": "garbage"}).status_code == 422
    assert client.get(f"/v1/jobs/{'0' * 32}/events").status_code == 404


def test_sse_of_a_finished_job_sends_everything_then_ends(client: TestClient, dataset_id: str):
    store, job_id = new_job(client, dataset_id)
    run_job(store, job_id, steps=3)
    started = time.monotonic()
    events = read_sse(client, job_id)
    assert time.monotonic() - started < 5  # ended at once: the final state event was sent
    assert [e["event"] for e in events] == ["state", "state", "metrics", "metrics", "metrics", "state"]
    for e in events:
        body = json.loads(e["data"])
        assert body["id"] == e["id"] and body["type"] == e["event"]
    assert json.loads(events[-1]["data"])["data"]["status"] == "succeeded"

    resumed = read_sse(client, job_id, {"Last-Event-ID": events[2]["id"]})
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    by_query = client.stream("GET", f"/v1/jobs/{job_id}/events", params={"after": events[4]["id"]}, headers=SSE)
    with by_query as r:
        assert sum(line.startswith("id: ") for line in r.iter_lines()) == 1


def test_sse_follows_a_live_job(client: TestClient, dataset_id: str):
    store, job_id = new_job(client, dataset_id)
    worker = threading.Timer(0.5, run_job, args=(store, job_id, 2))
    worker.start()
    events = read_sse(client, job_id)
    worker.join()
    assert [json.loads(e["data"])["type"] for e in events] == ["state", "state", "metrics", "metrics", "state"]

"""Redis and the API restarted under a running job: nothing lost, everyone reconnects by themselves."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx

from tests.system.fault.conftest import client, lost
from tests.system import FINISHED, events, upload, wait_status, wait_step

JOB = {"max_steps": 30, "save_steps": 10, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
       "max_length": 128, "learning_rate": 1e-3}


def wait_healthy(system, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{system.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("API did not come back")


def test_redis_restart_keeps_queue_records_and_events(system, small_dataset):
    import redis

    with client(system) as c:
        dataset_id = upload(c, small_dataset)
        waiting = c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx"}).json()  # no mlx worker
        running = c.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": JOB}).json()
        wait_step(c, running["id"], 5)
        listed = lambda: {j["id"] for j in c.get("/v1/jobs").json()["items"]}  # noqa: E731
        assert {waiting["id"], running["id"]} <= listed()  # both listed before the restart
        (pid,) = system.pids("redis-server")
        os.kill(pid, signal.SIGTERM)  # local mode restarts it, as compose's restart policy would
        done = wait_status(c, running["id"], FINISHED, timeout=300)
        assert not lost(done), done
        steps = [e["data"]["step"] for e in events(c, running["id"]) if e["type"] == "metrics" and "loss" in e["data"]]
        assert steps == list(range(1, 31))  # no event lost while Redis was away (its event script loaded again)
        assert c.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
        assert {waiting["id"], running["id"]} <= listed()  # and after it: the index and records reloaded from disk
        queued = redis.Redis.from_url(system.redis_url).lrange("mlx", 0, -1)
        assert any(waiting["id"] in json.loads(m)["headers"]["argsrepr"] for m in queued)  # its message survived
        assert c.post(f"/v1/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"
    assert system.pids("redis-server")[0] != pid


def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict]:
    got: list[dict] = []
    event: dict = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            event["id"] = line[4:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and "id" in event:
            got.append(event)
            event = {}
            if stop_after and len(got) >= stop_after:
                break
    return got


def test_api_restart_loses_nothing_and_sse_resumes(system, small_dataset):
    with client(system) as c:
        job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "hyperparameters": JOB}).json()
        wait_step(c, job["id"], 2)
        sse = {"Accept": "text/event-stream"}
        with c.stream("GET", f"/v1/jobs/{job['id']}/events", headers=sse) as r:
            first = read_sse(r, stop_after=3)
        (pid,) = system.pids("ktoforge_api.main:app")
        os.kill(pid, signal.SIGKILL)
        wait_healthy(system)
        with c.stream("GET", f"/v1/jobs/{job['id']}/events", headers={**sse, "Last-Event-ID": first[-1]["id"]},
                      timeout=300) as r:
            rest = read_sse(r)  # ends when the job is finished and every event was sent
        done = wait_status(c, job["id"], FINISHED)
        assert not lost(done), done
        ids = [e["id"] for e in first + rest]
        assert ids == [e["id"] for e in events(c, job["id"])]  # every event once, in order
    assert system.pids("ktoforge_api.main:app")[0] != pid

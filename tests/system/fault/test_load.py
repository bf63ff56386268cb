"""Load and scale-out: concurrent submissions, retried POSTs, two workers sharing one queue."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from tests.system.fault.conftest import client, lost
from tests.system import FINISHED, events, upload, wait_status

TINY = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 64,
        "save_steps": 100}


def test_200_concurrent_submissions_and_idempotent_retries(system, small_dataset):
    r = redis.Redis.from_url(system.redis_url)
    with client(system) as c:
        body = {"dataset_id": upload(c, small_dataset), "backend": "mlx"}  # no mlx worker: they stay queued
        before_msgs, before_total = r.llen("mlx"), c.get("/v1/jobs").json()["total"]

        def submit(i: int) -> tuple[int, str]:
            resp = c.post("/v1/jobs", json=body)
            return resp.status_code, resp.json()["id"]

        with ThreadPoolExecutor(max_workers=32) as pool:  # bounded: 32 connections, 200 requests, loopback only
            results = list(pool.map(submit, range(200)))
        assert {code for code, _ in results} == {201}
        ids = [job_id for _, job_id in results]
        assert len(set(ids)) == 200
        assert c.get("/v1/jobs").json()["total"] - before_total == 200
        assert r.llen("mlx") - before_msgs == 200

        def retry(i: int) -> tuple[int, str]:
            resp = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "client-retry-1"})
            return resp.status_code, resp.json()["id"]

        with ThreadPoolExecutor(max_workers=10) as pool:
            retried = list(pool.map(retry, range(10)))
        assert len({job_id for _, job_id in retried}) == 1
        assert sorted(code for code, _ in retried) == [200] * 9 + [201]
        assert r.llen("mlx") - before_msgs == 201
        for job_id in ids + [retried[0][1]]:
            assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_two_workers_share_twenty_jobs_each_trained_once(system, small_dataset, tmp_path):
    """Two workers of their own on the mlx queue: its solo pool trains in-process, so twenty jobs take seconds
    each rather than a fresh torch child each; the sharing, leases and acks under test are the same for both
    queues (shared/ktoforge/queue.py)."""
    env = {**system.env, "KTOFORGE_REDIS_URL": system.redis_url}
    celery = str(Path(sys.executable).parent / "celery")
    workers = [subprocess.Popen([celery, "-A", "ktoforge_mlx.app", "worker", "-Q", "mlx", "-P", "solo",
                                 "-n", f"{name}@%h"], env=env,
                                stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
               for name in ("first", "second")]
    try:
        with client(system) as c:
            deadline = time.time() + 90
            while len(c.get("/readyz").json()["queues"]["mlx"]["workers"]) < 2:
                assert time.time() < deadline and all(w.poll() is None for w in workers), \
                    "\n".join((tmp_path / f"{name}.log").read_text() for name in ("first", "second"))
                time.sleep(0.5)
            dataset_id = upload(c, small_dataset)
            jobs = [c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx", "hyperparameters": TINY}
                           ).json() for _ in range(20)]
            done = [wait_status(c, j["id"], FINISHED, timeout=600) for j in jobs]
            for job in done:
                assert not lost(job), (job.get("failure_reason"), job)
                assert job["attempts"] == 1
                steps = [e["data"]["step"] for e in events(c, job["id"]) if e["type"] == "metrics" and "loss" in e["data"]]
                assert steps == [1]  # trained exactly once
            names = {job["worker"].split("@")[0] for job in done}
            assert names == {"first", "second"}, names
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)

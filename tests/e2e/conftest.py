"""The whole system in local mode (`ktoforge up`): redis-server, API, torch worker, Flower as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

API_KEY = "e2e-api-key"


@dataclass
class System:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def client(self, key: str = API_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def start_system(tmp: Path, workers: list[str]) -> System:
    port = free_port()
    env = {
        **os.environ,
        "KTOFORGE_API_PORT": str(port),
        "KTOFORGE_API_URL": f"http://127.0.0.1:{port}",
        "KTOFORGE_REDIS_PORT": str(free_port()),
        "KTOFORGE_REDIS_PASSWORD": "e2e-redis-pass",
        "KTOFORGE_FLOWER_PORT": str(free_port()),
        "KTOFORGE_API_KEY": API_KEY,
        "KTOFORGE_WORKER_TOKEN": "e2e-worker-token",
        "KTOFORGE_DATA_DIR": str(tmp / "data"),
        "KTOFORGE_WORK_DIR": str(tmp / "work"),
        "KTOFORGE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "KTOFORGE_LOCAL_WORKERS": str(workers).replace("'", '"'),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KTOFORGE_REDIS_URL", None)
    log = tmp / "system.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ktoforge"), "up"], cwd=tmp, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    system = System(f"http://127.0.0.1:{port}", env, proc, log)
    deadline = time.time() + 120
    with system.client() as c:
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-4000:]
            try:
                ready = c.get("/readyz")
                queues = ready.json().get("queues", {})
                if ready.status_code == 200 and all(queues.get(q, {}).get("ready") for q in workers):
                    return system
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
    stop_system(system)
    raise AssertionError("system did not become ready:\n" + log.read_text()[-4000:])


def stop_system(system: System) -> None:
    if system.proc.poll() is None:
        os.killpg(system.proc.pid, signal.SIGINT)
        try:
            system.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(system.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Only the torch worker, so that the mlx queue has no consumer."""
    s = start_system(tmp_path_factory.mktemp("system"), ["cuda"])
    yield s
    stop_system(s)


def wait_status(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} stuck in {job['status']}: {job}")


def events(client: httpx.Client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/events", params={"limit": 10000}).json()["items"]

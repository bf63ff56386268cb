"""The whole system in local mode (`ktoforge up`) as real processes, and helpers to drive and break it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ktoforge.local import stop_group
from tests.conftest import ROOT, free_port

API_KEY = "e2e-api-key"
FINISHED = {"succeeded", "failed", "cancelled"}


PREWARMED = "prewarm: training stack imported"  # what ktoforge_worker.app logs once a pool child has imported
TORCH_WORKER = "ktoforge_worker.app worker"  # the torch worker's command line: parent and pool child, not Flower


@dataclass
class System:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def client(self, key: str = API_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.env['KTOFORGE_REDIS_PASSWORD']}@127.0.0.1:{self.env['KTOFORGE_REDIS_PORT']}/0"

    def pids(self, marker: str) -> list[int]:
        """Descendants of the supervisor whose command line contains ``marker``, parents first."""
        found, frontier = [], [self.proc.pid]
        while frontier:
            parent = frontier.pop(0)
            for child in _children(parent):
                frontier.append(child)
                if marker in _cmdline(child):
                    found.append(child)
        return found

    def prewarmed_child(self, count: int, timeout: float = 180) -> int:
        """The pid of the torch worker's pool child once the log holds ``count`` prewarm lines: its child has
        imported the training stack (KTOFORGE_WORKER_PREWARM), ``count`` children so far (one per job)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = self.pids(TORCH_WORKER)
            if self.log.read_text().count(PREWARMED) >= count and len(pids) == 2:
                return pids[1]
            time.sleep(0.2)
        raise AssertionError(f"no prewarmed child #{count}:\n" + self.log.read_text()[-4000:])

    def wait_ready(self, queues: list[str], timeout: float = 120) -> None:
        deadline = time.time() + timeout
        with self.client() as c:
            while time.time() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-4000:]
                try:
                    ready = c.get("/readyz")
                    qs = ready.json().get("queues", {})
                    if ready.status_code == 200 and all(qs.get(q, {}).get("ready") for q in queues):
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.5)
        raise AssertionError("system not ready:\n" + self.log.read_text()[-4000:])


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def start_system(tmp: Path, workers: list[str], **extra: str) -> System:
    """``ktoforge up`` in ``tmp`` with free ports; ``extra`` sets more KTOFORGE_* variables."""
    port = free_port()
    env = {
        **os.environ,
        "KTOFORGE_API_PORT": str(port),
        "KTOFORGE_REDIS_PORT": str(free_port()),
        "KTOFORGE_REDIS_PASSWORD": "e2e-redis-pass",
        "KTOFORGE_FLOWER_PORT": str(free_port()),
        "KTOFORGE_API_KEY": API_KEY,
        "KTOFORGE_WORKER_TOKEN": "e2e-worker-token",
        "KTOFORGE_DATA_DIR": str(tmp / "data"),
        "KTOFORGE_WORK_DIR": str(tmp / "work"),
        "KTOFORGE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
        "KTOFORGE_LOCAL_WORKERS": json.dumps(workers),
        "PYTHONUNBUFFERED": "1",
        **{f"KTOFORGE_{k.upper()}": v for k, v in extra.items()},
    }
    env.pop("KTOFORGE_REDIS_URL", None)
    if "api_url" not in extra:  # the workers find the API from KTOFORGE_API_PORT, as `make dev` users rely on
        env.pop("KTOFORGE_API_URL", None)
    log = tmp / "system.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ktoforge"), "up"], cwd=tmp, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    system = System(f"http://127.0.0.1:{port}", env, proc, log)
    try:
        system.wait_ready(workers)
    except AssertionError:
        stop_system(system)
        raise
    return system


def stop_system(system: System) -> None:
    stop_group(system.proc)


def upload(client: httpx.Client, path: Path) -> str:
    with open(path, "rb") as fh:
        r = client.post("/v1/datasets", files={"file": (path.name, fh, "application/jsonl")})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def wait_status(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    job: dict = {}
    while time.time() < deadline:
        try:
            job = client.get(f"/v1/jobs/{job_id}").json()
        except httpx.HTTPError:  # the API may be restarting
            time.sleep(0.5)
            continue
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} stuck: {job}")


def events(client: httpx.Client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/events", params={"limit": 10000}).json()["items"]


def wait_step(client: httpx.Client, job_id: str, step: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [e["data"]["step"] for e in events(client, job_id) if e["type"] == "metrics" and "loss" in e["data"]]
        if steps and max(steps) >= step:
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached step {step}")

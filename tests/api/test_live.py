"""The API as its start command runs it (uvicorn in a child process): behaviour only a real server shows."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import USER
from tests.conftest import free_port

WATCHERS = 60  # more than anyio's default thread pool (40 threads)


@dataclass
class LiveApi:
    url: str
    proc: subprocess.Popen


@pytest.fixture()
def live_api(kf_env: dict[str, str], redis_client, tmp_path: Path) -> Iterator[LiveApi]:
    port = free_port()
    env = {**os.environ, **kf_env, "KTOFORGE_API_HOST": "127.0.0.1", "KTOFORGE_API_PORT": str(port)}
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield LiveApi(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def submit_job(url: str, dataset: Path) -> str:
    """A queued job (no worker runs here), so its event stream stays open."""
    with httpx.Client(base_url=url, headers=USER, timeout=30) as c, dataset.open("rb") as fh:
        dataset_id = c.post("/v1/datasets", files={"file": ("d.jsonl", fh)}).json()["id"]
        return c.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]


def test_many_sse_watchers_do_not_stall_the_api(live_api: LiveApi, reference_dataset: Path):
    """Each SSE client of a running job waits for events; none of them may hold a thread the routes need."""

    async def scenario() -> float:
        job = await asyncio.to_thread(submit_job, live_api.url, reference_dataset)
        async with httpx.AsyncClient(base_url=live_api.url, headers=USER, timeout=30) as c:

            async def watch(opened: asyncio.Event) -> None:
                async with c.stream("GET", f"/v1/jobs/{job}/events",
                                    headers={"Accept": "text/event-stream"}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            opened.set()  # the queued event arrived; now it waits for more

            events = [asyncio.Event() for _ in range(WATCHERS)]
            tasks = [asyncio.create_task(watch(e)) for e in events]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 30)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            r = await c.get(f"/v1/jobs/{job}")
            elapsed = time.monotonic() - started
            assert r.status_code == 200
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return elapsed

    assert asyncio.run(scenario()) < 1.0


def test_shutdown_ends_open_streams(live_api: LiveApi, reference_dataset: Path):
    """SIGTERM (a restart, `docker stop`) must not wait for SSE clients of running jobs to leave."""
    job = submit_job(live_api.url, reference_dataset)
    with httpx.Client(base_url=live_api.url, headers=USER, timeout=30) as c:
        with c.stream("GET", f"/v1/jobs/{job}/events", headers={"Accept": "text/event-stream"}) as r:
            lines = r.iter_lines()
            assert any(line.startswith("data: ") for line in lines)  # the stream is open and live
            live_api.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for _ in lines:  # the server ends the stream
                pass
    live_api.proc.wait(10)
    assert time.monotonic() - started < 10

"""The API as its start command runs it (uvicorn in a child process): behaviour only a real server shows."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from tests.api.conftest import USER, LiveApi

WATCHERS = 60  # more than anyio's default thread pool (40 threads)


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

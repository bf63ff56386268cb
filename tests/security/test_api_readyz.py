"""Finding 1: anonymous /readyz calls hung the whole API (a Celery broadcast per call through kombu's pool).

Against the API as it runs (uvicorn in a child process): 200 concurrent anonymous /readyz calls, on loopback
and bounded, sent by a process of their own, while this one checks that an authenticated GET /v1/jobs keeps
answering in under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from tests.api.conftest import USER, LiveApi

CALLS = 200
# The storm: CALLS requests in flight at once; says "sent" once they are, then prints their statuses.
STORM = """
import asyncio, json, sys, httpx
async def main(url, calls):
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as anon:
        async def one():
            try:
                return (await anon.get("/readyz")).status_code
            except httpx.HTTPError:
                return 0
        tasks = [asyncio.create_task(one()) for _ in range(calls)]
        await asyncio.sleep(0)
        print("sent", flush=True)
        print(json.dumps(await asyncio.gather(*tasks)), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_anonymous_readyz_storm_leaves_the_api_answering(live_api: LiveApi):
    storm = subprocess.Popen([sys.executable, "-c", STORM, live_api.url, str(CALLS)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert storm.stdout.readline().strip() == "sent"
        latencies = []
        with httpx.Client(base_url=live_api.url, headers=USER, timeout=10) as user:
            for _ in range(5):
                time.sleep(0.2)
                started = time.monotonic()
                try:
                    assert user.get("/v1/jobs").status_code == 200
                    latencies.append(round(time.monotonic() - started, 3))
                except httpx.TimeoutException:
                    latencies.append(float("inf"))
        statuses = json.loads(storm.communicate(timeout=90)[0])
    finally:
        storm.kill()
        storm.wait()
    assert max(latencies) < 1.0, latencies
    assert statuses == [200] * CALLS, sorted(set(statuses))
    assert httpx.get(f"{live_api.url}/healthz", timeout=5).status_code == 200

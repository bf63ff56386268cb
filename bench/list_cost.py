"""Does listing jobs slow down with history? GET /v1/jobs?limit=50, with and without a status filter, at 100
and at 10,000 stored jobs, through the real API (one uvicorn process) and Redis.

Jobs are created through the job store as the API creates them (all queued, so the filtered list matches every
job: the case an index must make cheap). Each size has its own Redis and API process, both running at once; each
gets 200 timed requests per query after 20 warm-up ones, the sizes alternating in 5 rounds (side by side: noise
hits both alike); prints the p50 of each and `api_list_10k_over_100_ratio`, the larger of the two p50 ratios
(10k / 100).
Run: .venv/bin/python bench/list_cost.py [--requests 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from api_throughput import KEY, start_api
from harness import emit, median

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobCreate
from tests.conftest import RedisServer

QUERIES = {"all": {"limit": 50}, "status": {"limit": 50, "status": "queued"}}
SIZES = (100, 10_000)
ROUNDS = 5  # the sizes alternate round by round, so that load on the shared cores hits both alike


def timed_gets(client: httpx.Client, params: dict, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.get("/v1/jobs", params=params)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200 and len(r.json()["items"]) == 50, r.text
    return times


def p50s(urls: dict[int, str], requests: int) -> dict[int, dict[str, float]]:
    """The p50 of each query at each size, the sizes' APIs asked in alternating rounds after 20 warm-up calls."""
    times: dict[int, dict[str, list[float]]] = {size: {name: [] for name in QUERIES} for size in urls}
    clients = {size: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
               for size, url in urls.items()}
    try:
        for size, client in clients.items():
            for params in QUERIES.values():
                timed_gets(client, params, 20)
        for _ in range(ROUNDS):
            for size, client in clients.items():
                for name, params in QUERIES.items():
                    times[size][name] += timed_gets(client, params, requests // ROUNDS)
    finally:
        for client in clients.values():
            client.close()
    return {size: {name: median(t) for name, t in by_name.items()} for size, by_name in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        urls = {}
        for size in SIZES:  # one Redis and one API per size, both up for the whole measurement
            server = RedisServer(Path(tmp) / f"redis-{size}")
            server.start()
            stack.callback(server.stop)
            store = JobStore.from_url(server.url)
            for _ in range(size):
                store.create(JobCreate(dataset_id="0" * 64))
            proc, urls[size] = start_api(server.url, Path(tmp) / f"data-{size}")
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
        results = p50s(urls, args.requests)
    for size in SIZES:
        for name, value in results[size].items():
            emit(f"api_list_{name}_p50_ms_{size // 1000 or size}{'k' if size >= 1000 else ''}", value * 1e3, ".2f")
    emit("api_list_10k_over_100_ratio", max(results[10_000][n] / results[100][n] for n in QUERIES), ".2f")


if __name__ == "__main__":
    main()

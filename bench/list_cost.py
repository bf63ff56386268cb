"""Does listing jobs slow down with history? GET /v1/jobs?limit=50, with and without a status filter, at 100
and at 10,000 stored jobs, through the real API (one uvicorn process) and Redis.

Jobs are created through the job store as the API creates them (all queued, so the filtered list matches every
job: the case an index must make cheap). Each size gets 200 timed requests per query after 20 warm-up ones;
prints the p50 of each and `api_list_10k_over_100_ratio`, the larger of the two p50 ratios (10k / 100).
Run: .venv/bin/python bench/list_cost.py [--requests 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from api_throughput import KEY, start_api
from harness import emit, median

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobCreate
from tests.conftest import RedisServer

QUERIES = {"all": {"limit": 50}, "status": {"limit": 50, "status": "queued"}}


def p50s(url: str, requests: int) -> dict[str, float]:
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        for name, params in QUERIES.items():
            times = []
            for i in range(requests + 20):
                t0 = time.perf_counter()
                r = client.get("/v1/jobs", params=params)
                if i >= 20:
                    times.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["items"]) == 50, r.text
            out[name] = median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        store = JobStore.from_url(server.url)
        proc, url = start_api(server.url, Path(tmp) / "data")
        try:
            stored = 0
            for size in (100, 10_000):
                for _ in range(size - stored):
                    store.create(JobCreate(dataset_id="0" * 64))
                stored = size
                results[size] = p50s(url, args.requests)
        finally:
            proc.terminate()
            proc.wait(10)
            server.stop()
    for size in (100, 10_000):
        for name, value in results[size].items():
            emit(f"api_list_{name}_p50_ms_{size // 1000 or size}{'k' if size >= 1000 else ''}", value * 1e3, ".2f")
    emit("api_list_10k_over_100_ratio", max(results[10_000][n] / results[100][n] for n in QUERIES), ".2f")


if __name__ == "__main__":
    main()

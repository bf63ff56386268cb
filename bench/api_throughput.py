"""API throughput under wrk (Debian's package) on loopback: GET /v1/jobs/{id} and GET /v1/jobs.

One uvicorn process (as local mode and compose run it) pinned to core 0, wrk pinned to core 1 (1 thread,
32 connections, after a 2 s warm-up): the API gets one core, the other stays for the load generator, as it
would stay for the workers. The store holds 100 jobs; every request carries the API key. Each endpoint is
loaded --repeats times for --seconds; the figures are the medians (a p99 over a few seconds moves with
whatever else the machine runs). Prints `api_rps` and `api_p99_ms` for GET /v1/jobs/{id}, and
api_list_rps / api_list_p99_ms for GET /v1/jobs, and api_list_redis_core_share: the CPU time Redis spent over
the wall time of that load (its warm-up included), the share of a core that serving the pages took from the
machine outside the API's process. bench/profile_api.py shows where the time goes.
Run: .venv/bin/python bench/api_throughput.py [--seconds 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from harness import emit, median

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobCreate
from tests.conftest import RedisServer, free_port

KEY = "bench-api-key"
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def start_api(redis_url: str, data_dir: Path, python: tuple[str, ...] = ("-m", "uvicorn"),
              extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """One uvicorn process on core 0; ``python`` may replace ``-m uvicorn`` with a launcher that runs it."""
    port = free_port()
    env = {**os.environ, "KTOFORGE_REDIS_URL": redis_url, "KTOFORGE_API_KEY": KEY,
           "KTOFORGE_WORKER_TOKEN": "bench-worker-token", "KTOFORGE_DATA_DIR": str(data_dir), **(extra_env or {})}
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, *python, "ktoforge_api.main:app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API did not start")


def wrk(url: str, seconds: int, repeats: int = 1) -> tuple[float, float]:
    """(requests/s, p99 in ms), medians of ``repeats`` wrk runs after a warm-up; non-2xx answers fail the run."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency",
           "-H", f"Authorization: Bearer {KEY}", url]
    subprocess.run([*cmd[:6], "-d2s", *cmd[7:]], check=True, capture_output=True)  # warm-up: 2 s, 32 connections
    runs = []
    for _ in range(repeats):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        assert "Non-2xx" not in out, out
        value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
        runs.append((float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), float(value) * UNITS_MS[unit]))
    return median([r for r, _ in runs]), median([p for _, p in runs])


def redis_cpu_seconds(redis_url: str) -> float:
    """The CPU time (user and system) the Redis server has used since it started, as its INFO reports it."""
    with redis.Redis.from_url(redis_url) as client:
        cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def stored_jobs(redis_url: str, count: int = 100) -> str:
    """``count`` queued jobs in the store; the id of the last."""
    store = JobStore.from_url(redis_url)
    return [store.create(JobCreate(dataset_id="0" * 64))[0].id for _ in range(count)][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        job_id = stored_jobs(server.url)
        proc, url = start_api(server.url, Path(tmp) / "data")
        try:
            rps, p99 = wrk(f"{url}/v1/jobs/{job_id}", args.seconds, args.repeats)
            redis_cpu, start = redis_cpu_seconds(server.url), time.monotonic()
            list_rps, list_p99 = wrk(f"{url}/v1/jobs", args.seconds, args.repeats)
            redis_share = (redis_cpu_seconds(server.url) - redis_cpu) / (time.monotonic() - start)
        finally:
            proc.terminate()
            proc.wait(10)
            server.stop()
    emit("api_rps", rps, ".0f")
    emit("api_p99_ms", p99, ".1f")
    emit("api_list_rps", list_rps, ".0f")
    emit("api_list_p99_ms", list_p99, ".1f")
    emit("api_list_redis_core_share", redis_share, ".3f")


if __name__ == "__main__":
    main()

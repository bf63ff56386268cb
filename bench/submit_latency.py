"""Submit → running latency with an idle worker: 50 jobs one after another through local mode.

For each job the clock starts just before POST /v1/jobs and stops at the record's ``started_at`` (the worker's
transition to running, stamped by the same machine's clock); the next job is submitted once the previous one
has finished, so the worker is idle each time. Jobs are as small as KTO allows (1 step, batch 2, 64 tokens):
only the path to "running" matters here.

The 50 jobs go to the MLX worker (mlx[cpu] here): the queue path (API → Redis → Celery → the worker's
transition) is the same for both workers, and an MLX job of one step ends in about a second, where the torch
worker's fresh child (a new process per job) takes several. The torch worker gets 5 jobs of its own, so that its
path is measured too, each once the worker is idle again (wait_worker_idle): after a job its child exits and the
pool forks the next one (--max-tasks-per-child 1), which imports the training stack before it takes a job
(KTOFORGE_WORKER_PREWARM), so a job submitted at once waits for that (before the prewarm, with a fixed 8 s pause
instead: torch p50 0.028 s, max 0.052, in a check run).
Prints `submit_latency_p50_s` and `submit_latency_p99_s` (MLX worker, nearest rank: with 50 jobs, the second
largest), then `submit_latency_torch_p50_s` and `submit_latency_torch_max_s`.
Run: .venv/bin/python bench/submit_latency.py [--jobs 50] [--torch-jobs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import emit, percentile, small_dataset, wait_worker_idle

from tests.system import start_system, stop_system, upload, wait_status

HP = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 64,
      "gradient_checkpointing": False, "save_steps": 1000}


def latencies(client, dataset_id: str, backend: str, jobs: int,
              idle: Callable[[int], object] = lambda done: None) -> list[float]:
    """Submit → running of ``jobs`` jobs on ``backend``'s queue, each submitted once the one before has ended and
    ``idle(jobs done)`` has returned (the worker ready for the next)."""
    out: list[float] = []
    for _ in range(jobs):
        idle(len(out))
        t0 = time.time()
        r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": backend, "hyperparameters": HP})
        assert r.status_code == 201, r.text
        job = wait_status(client, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
        assert job["status"] == "succeeded", job
        out.append(job["started_at"] - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--torch-jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "system").mkdir()
        system = start_system(tmp_path / "system", ["cuda", "mlx"])
        try:
            with system.client() as client:
                dataset_id = upload(client, small_dataset(tmp_path, 8))
                mlx = latencies(client, dataset_id, "mlx", args.jobs)
                torch = latencies(client, dataset_id, "cuda", args.torch_jobs,
                                  lambda done: wait_worker_idle(system, done + 1))
        finally:
            stop_system(system)
    emit("submit_latency_p50_s", percentile(mlx, 50))
    emit("submit_latency_p99_s", percentile(mlx, 99))
    emit("submit_latency_torch_p50_s", percentile(torch, 50))
    emit("submit_latency_torch_max_s", max(torch))


if __name__ == "__main__":
    main()

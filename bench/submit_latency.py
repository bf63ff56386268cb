"""Submit → running latency with an idle worker: 50 jobs one after another on local mode's torch worker.

For each job the clock starts just before POST /v1/jobs and stops at the record's ``started_at`` (the worker's
transition to running, stamped by the same machine's clock); the next job is submitted once the previous one
has finished, so the worker is idle each time. Jobs are as small as KTO allows (1 step, batch 2, 64 tokens):
only the path to "running" matters here. Prints `submit_latency_p50_s` and `submit_latency_p99_s`
(nearest rank: with 50 jobs, the second largest).
Run: .venv/bin/python bench/submit_latency.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import emit, percentile, small_dataset

from tests.system import start_system, stop_system, upload, wait_status

HP = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 64,
      "gradient_checkpointing": False, "save_steps": 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "system").mkdir()
        system = start_system(tmp_path / "system", ["cuda"])
        try:
            with system.client() as client:
                dataset_id = upload(client, small_dataset(tmp_path, 8))
                for _ in range(args.jobs):
                    t0 = time.time()
                    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": HP})
                    assert r.status_code == 201, r.text
                    job = wait_status(client, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
                    assert job["status"] == "succeeded", job
                    latencies.append(job["started_at"] - t0)
        finally:
            stop_system(system)
    emit("submit_latency_p50_s", percentile(latencies, 50))
    emit("submit_latency_p99_s", percentile(latencies, 99))


if __name__ == "__main__":
    main()

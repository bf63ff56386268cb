"""The torch worker's pool child imports the training stack before its job arrives (KTOFORGE_WORKER_PREWARM).

Each job trains in a fresh child (--max-tasks-per-child 1); the child imports torch, TRL, transformers, peft and
datasets as it starts, so a job sent to an idle worker does not spend those seconds in its run. Celery kills a
child that is not up within worker_proc_alive_timeout (4 s by default, less than the imports take): the child
that trains must be the one that imported, not a replacement forked after a kill.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.job_fixtures import subset
from tests.system import FINISHED, PREWARMED, upload, wait_status

pytestmark = pytest.mark.slow


def test_each_jobs_child_has_imported_the_training_stack_before_the_job(system, reference_dataset, tmp_path):
    first = system.prewarmed_child(1)
    assert "libtorch" in Path(f"/proc/{first}/maps").read_text()  # torch loaded with no job sent yet
    hp = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 64,
          "save_steps": 1000}
    with system.client() as c:
        dataset_id = upload(c, subset(reference_dataset, tmp_path / "small.jsonl", 8))
        job = c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "cuda", "hyperparameters": hp}).json()
        done = wait_status(c, job["id"], FINISHED, timeout=300)
    assert done["status"] == "succeeded", done
    second = system.prewarmed_child(2)  # the job's child exited; its replacement imported before any job
    assert second != first
    log = system.log.read_text()
    assert log.count(PREWARMED) == 2, log[-4000:]  # one child per job, none killed and forked again
    assert "Timed out waiting for UP message" not in log

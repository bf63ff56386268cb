"""Unsloth is imported before trl, transformers, peft and datasets in the process that trains (issue 9).

Unsloth patches TRL's KTOTrainer (chunked log-probs instead of full [batch, seq, vocab] logits) only when it
is imported first; a class bound before that import stays TRL's unpatched one. A stand-in ``unsloth`` on the
path of a fresh worker process (clean sys.modules) records what was imported before it, and the job runs
through the real lifecycle, API and Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ktoforge.schemas import JobStatus
from tests.worker_cuda.standin_unsloth import PRELUDE, SOURCE


def run_with_standin_unsloth(job_id: str, tmp_path: Path, before: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    """One delivery of the job in a fresh Python process that has the stand-in Unsloth and 'a GPU'; ``before``:
    code run in that process first (as the pool child's prewarm runs before its job)."""
    package = tmp_path / "standin" / "unsloth"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SOURCE)
    record = tmp_path / "unsloth-record.json"
    env = {**os.environ, "STANDIN_UNSLOTH_RECORD": str(record),
           "PYTHONPATH": os.pathsep.join([str(package.parent), os.environ.get("PYTHONPATH", "")]),
           # not a lease test: a 1 s lease (the api fixture's) can lapse on a loaded machine mid-run
           "KTOFORGE_LEASE_TTL_S": "60", "KTOFORGE_HEARTBEAT_INTERVAL_S": "1"}
    env.pop("UNSLOTH_DATASET_NUM_PROC", None)
    code = PRELUDE + before + (
        "from ktoforge.lifecycle import run_job\n"
        "from ktoforge_worker.train import train\n"
        f"run_job({job_id!r}, 'cuda', train, worker='cuda@standin')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    return proc, json.loads(record.read_text()) if record.exists() else {}


def test_unsloth_is_imported_before_the_training_stack_and_patches_the_trainer(new_job, tmp_path):
    store, make = new_job
    job_id = make()
    proc, seen = run_with_standin_unsloth(job_id, tmp_path)
    job = store.get(job_id)
    assert job.status == JobStatus.succeeded, (job.reason, proc.stderr[-3000:])
    assert seen["imported_before"] == [], "Unsloth must come before these: " + ", ".join(seen["imported_before"])
    assert (seen["trainer"], seen["config"]) == ("UnslothKTOTrainer", "UnslothKTOConfig")
    assert seen["from_pretrained"]["load_in_4bit"] is True
    assert seen["from_pretrained"]["trust_remote_code"] is False


def test_unsloth_tokenizes_in_process(new_job, tmp_path):
    """UNSLOTH_DATASET_NUM_PROC is set before Unsloth reads it: no dataset workers forked from a CUDA holder."""
    store, make = new_job
    job_id = make()
    proc, seen = run_with_standin_unsloth(job_id, tmp_path)
    assert store.get(job_id).status == JobStatus.succeeded, proc.stderr[-3000:]
    assert seen["dataset_num_proc_env"] == "1"
    assert seen["dataset_num_proc"] is None  # None: Dataset.map runs in this process
    assert seen["compile_location"].startswith(os.environ["KTOFORGE_WORK_DIR"])


def test_the_pool_childs_prewarm_imports_unsloth_first_and_its_job_gets_the_patched_trainer(new_job, tmp_path):
    """The prewarm (ktoforge_worker.app) runs in the child before its job: Unsloth must still come first there,
    and the job, which then imports nothing new, must still train with Unsloth's classes."""
    store, make = new_job
    job_id = make()
    prewarm = ("import sys\n"
               "from ktoforge_worker.app import prewarm\n"
               "prewarm()\n"
               "assert {'unsloth', 'trl', 'transformers', 'peft', 'datasets'} <= set(sys.modules), 'not prewarmed'\n")
    proc, seen = run_with_standin_unsloth(job_id, tmp_path, before=prewarm)
    job = store.get(job_id)
    assert job.status == JobStatus.succeeded, (job.reason, proc.stderr[-3000:])
    assert seen["imported_before"] == [], "Unsloth must come before these: " + ", ".join(seen["imported_before"])
    assert (seen["trainer"], seen["config"]) == ("UnslothKTOTrainer", "UnslothKTOConfig")

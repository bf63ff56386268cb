"""A real JobContext for the torch train function: real job store, real files, no API needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ktoforge.jobs import JobStore
from ktoforge.lifecycle import JobContext
from ktoforge.schemas import JobCreate, JobStatus
from ktoforge.settings import get_settings


def subset(reference: Path, dest: Path, n: int) -> Path:
    """The first n desirable and n undesirable rows of the reference file."""
    pos, neg = [], []
    for line in reference.read_text().splitlines():
        (pos if '"label": true' in line else neg).append(line)
    dest.write_text("\n".join(pos[:n] + neg[:n]) + "\n")
    return dest


@pytest.fixture()
def make_ctx(kf_env, redis_client, reference_dataset, tmp_path):
    def make(n_rows: int = 8, lora: dict | None = None, **hyper) -> JobContext:
        store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
        hp = {"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
              "max_length": 192, "save_steps": 2, "learning_rate": 1e-2, "gradient_checkpointing": False, **hyper}
        job, _ = store.create(JobCreate(dataset_id="0" * 64, hyperparameters=hp, lora=lora or {}))
        store.transition(job.id, JobStatus.running)
        root = tmp_path / "job"
        ctx = JobContext(store.get(job.id), store, get_settings(), subset(reference_dataset, tmp_path / "d.jsonl",
                         n_rows), root / "output", root / "checkpoints")
        ctx.output_dir.mkdir(parents=True)
        ctx.checkpoint_dir.mkdir(parents=True)
        return ctx

    yield make
    shutil.rmtree(tmp_path / "job", ignore_errors=True)

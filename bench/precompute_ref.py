"""The reference pass, computed per step or once up front: step time with the job option
`precompute_ref_log_probs` (TRL's name) on over off, on the torch path, same data and seed.

Each run is a job record with the option set, trained through the torch backend's own trainer
(ktoforge_worker.train.build_trainer: the job's KTOConfig, LoRA, builtin tiny model, CPU), so the figure
measures the option as a job gets it. With it on, TRL runs the reference model over the whole training set
before the first step and each step then skips the reference forward passes; the one-off cost pays back only
over many steps (full epochs). The two jobs take turns, --rounds times (the order swapped each round), and the
fastest run of each is kept: one run of each gave ratios from 0.75 to 0.97 on the same machine, as the step time
with the option off moved by a fifth between runs. Prints `precompute_ref_step_ratio` (median step time on / off,
each its fastest run's), precompute_ref_setup_s (train() to the first step, on, minus the same with it off: the
one-off pass; median over the rounds) and the two step times.
Run: .venv/bin/python bench/precompute_ref.py [--steps 30] [--rows 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import MODELS, emit, median, small_dataset

from tests.conftest import RedisServer

HP = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 192,
      "learning_rate": 1e-4, "gradient_checkpointing": False, "seed": 0}


def timed_job(dataset: Path, folder: Path, steps: int, precompute: bool) -> tuple[float, float]:
    """(median step time, seconds from train() to the first step) of one job trained through the backend."""
    from transformers import TrainerCallback

    from ktoforge.jobs import JobStore
    from ktoforge.lifecycle import JobContext
    from ktoforge.schemas import JobCreate, JobStatus
    from ktoforge.settings import get_settings
    from ktoforge_worker.train import build_trainer

    settings = get_settings()
    store = JobStore.from_url(settings.redis_url)
    hp = {**HP, "max_steps": steps, "save_steps": steps, "logging_steps": steps, "precompute_ref_log_probs": precompute}
    job, _ = store.create(JobCreate(dataset_id="0" * 64, hyperparameters=hp))
    store.transition(job.id, JobStatus.running)
    ctx = JobContext(store.get(job.id), store, settings, dataset, folder / "output", folder / "checkpoints")
    ctx.output_dir.mkdir(parents=True)
    ctx.checkpoint_dir.mkdir(parents=True)
    trainer, _, _ = build_trainer(ctx)
    assert trainer.args.precompute_ref_log_probs is precompute  # the option reached KTOConfig
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    start = time.perf_counter()
    trainer.train()
    marks.append(time.perf_counter())
    steps_s = [b - a for a, b in zip(marks[2:], marks[3:])]  # two warm-up steps left out
    return median(steps_s), marks[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each job, taking turns")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        os.environ.update(KTOFORGE_REDIS_URL=server.url, KTOFORGE_MODEL_CACHE_DIR=str(MODELS),
                          KTOFORGE_DATA_DIR=f"{tmp}/data", KTOFORGE_WORK_DIR=f"{tmp}/work")
        try:
            dataset = small_dataset(Path(tmp), args.rows)
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(args.rounds):
                for precompute in ((False, True) if i % 2 == 0 else (True, False)):
                    runs[precompute].append(timed_job(dataset, Path(tmp) / f"{precompute}-{i}", args.steps, precompute))
        finally:
            server.stop()
    off, on = (min(step for step, _ in runs[precompute]) for precompute in (False, True))
    setup = median([on_start - off_start for (_, on_start), (_, off_start) in zip(runs[True], runs[False])])
    emit("precompute_ref_step_off_s", off, ".4f")
    emit("precompute_ref_step_on_s", on, ".4f")
    emit("precompute_ref_setup_s", max(0.0, setup), ".2f")
    emit("precompute_ref_step_ratio", on / off)


if __name__ == "__main__":
    main()

"""Queue overhead: the same KTO job run directly through the torch backend's train function, and through
API → Redis → Celery → worker, side by side in one run, on builtin:smollm2-135m where its package is installed
(else the tiny model; pick_model).

Direct: a fresh Python process builds the job's context (a job record in the same Redis, the dataset file on
disk) and calls ``ktoforge_worker.train.train`` — imports, model load, training, adapter saved, as a user's own
script would. Through the system: POST /v1/jobs to a running local mode (idle worker) until the record says
succeeded. The worker's idle pool child has imported the training stack already (KTOFORGE_WORKER_PREWARM, the
default), as a user's idle worker has; a user's script imports it in its run. Each run, of either path, starts
once the worker's child is prewarmed and quiet (wait_worker_idle): the child forked after a job imports for
seconds, which would slow whichever run shared the cores with it. Both are timed from the moment they are asked
to start; runs alternate and the minimum of each is kept. Prints `queue_overhead_ratio` (system / direct) and,
from the job's own events, where the extra time went: queue_wait_s (submit → running), startup_s (running → the
first logged step: imports, model load, dataset download, and the steps up to that log), train_s (first → last
logged step) and finish_s (last step → succeeded: artifact uploads); then the same four of the fastest direct
run, direct_*, read from the events its job record gets in the same Redis (its direct_queue_wait_s is the
process's start and imports, up to the call of train), so each phase compares with its direct counterpart. The
step count starts at --steps (default: the model's). The first direct run of a count calibrates it: under
CALIBRATE_S of training (a faster machine), the count is scaled to train about TARGET_TRAIN_S and the run is
discarded, with no system run spent on it. Later runs of that count are discarded, with all kept so far, only
under the issue's MIN_TRAIN_S. Scaled to just past 30 s, a count missed it again a run or two later (two runs of one
count have differed by 18 % a step), and each restart threw away the runs kept so far: queue_overhead.py took
694 s of a 15 min 53 s make bench.
Run: .venv/bin/python bench/queue_overhead.py [--steps N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import MODELS, ROOT, emit, small_dataset, wait_worker_idle

from tests.system import events, start_system, stop_system, upload, wait_status

HP = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 192,
      "gradient_checkpointing": False, "logging_steps": 10, "learning_rate": 1e-4}
MIN_TRAIN_S = 30  # the condition: the ratio is judged at 30 s of training or more
CALIBRATE_S = 35  # a count's first run must train this long; else it is scaled to TARGET_TRAIN_S
TARGET_TRAIN_S = 40  # a third above MIN_TRAIN_S: a later run 25 % faster than the count's first still counts
LORA = {"lora_dropout": 0.0}  # the same adapter settings on both paths: a like-for-like ratio

DIRECT = """
import sys, time
from pathlib import Path
from ktoforge.jobs import JobStore
from ktoforge.lifecycle import JobContext
from ktoforge.schemas import JobCreate, JobStatus
from ktoforge.settings import get_settings
from ktoforge_worker.train import train

hp = eval(sys.argv[2])
settings = get_settings()
store = JobStore.from_url(settings.redis_url)
job, _ = store.create(JobCreate(dataset_id="0" * 64, model=sys.argv[5], hyperparameters=hp, lora=eval(sys.argv[4])))
store.transition(job.id, JobStatus.running)
root = Path(sys.argv[3])
ctx = JobContext(store.get(job.id), store, settings, Path(sys.argv[1]), root / "output", root / "checkpoints")
ctx.output_dir.mkdir(parents=True)
ctx.checkpoint_dir.mkdir(parents=True)
train(ctx)
assert (ctx.output_dir / "adapter_model.safetensors").exists()
print("JOB", job.id)
"""


def direct_run(client, env: dict[str, str], dataset: Path, model: str, hp: dict,
               folder: Path) -> tuple[float, dict[str, float]]:
    """Wall time of a fresh process that trains the job through the backend's train function alone, and its
    phases, read from the events its job record got in the same Redis (queue_wait_s: the process's start, its
    imports and the record's creation, up to the call of train)."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", DIRECT, str(dataset), repr(hp), str(folder), repr(LORA), model],
                         env=env, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout
    wall = time.time() - t0
    job_id = next(line.split()[1] for line in out.splitlines() if line.startswith("JOB "))
    return wall, phases_of(events(client, job_id), t0, t0 + wall)


def phases_of(evs: list[dict], t0: float, end: float) -> dict[str, float]:
    """Where a run's wall time went, from its job's events: t0 → running → first logged step → last → ``end``."""
    running = next(e["time"] for e in evs if e["type"] == "state" and e["data"].get("status") == "running")
    steps = [e["time"] for e in evs if e["type"] == "metrics"]
    return {"queue_wait_s": running - t0, "startup_s": steps[0] - running, "train_s": steps[-1] - steps[0],
            "finish_s": end - steps[-1]}


def system_run(client, dataset_id: str, model: str, hp: dict) -> tuple[float, dict[str, float]]:
    """Submit → succeeded through the API, and the phases of that wall time read from the job's events."""
    t0 = time.time()
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": model, "backend": "cuda",
                                      "hyperparameters": hp, "lora": LORA})
    assert r.status_code == 201, r.text
    job = wait_status(client, r.json()["id"], {"succeeded", "failed"}, timeout=900)
    assert job["status"] == "succeeded", job
    return job["finished_at"] - t0, phases_of(events(client, job["id"]), t0, job["finished_at"])


def progress(run: int, steps: int, path: str, wall: float, phase: dict[str, float]) -> None:
    """One line a run on stderr, stdout holding the figures only: where the script's minutes go (run alone;
    make bench keeps a script's stderr for the message of a failure)."""
    print(f"queue_overhead.py: run {run}, {steps} steps, {path}: {wall:.1f} s, {phase['train_s']:.1f} s training",
          file=sys.stderr, flush=True)


def scaled(steps: int, logging_steps: int, train_s: float) -> int:
    """The step count that trains about TARGET_TRAIN_S, from a run of ``steps`` that trained ``train_s``: training
    is timed from the first logged step on, so it spans the steps after that one (a first step also loads and
    warms up: seen 12 s, against 5-6 s for the others)."""
    per_step = train_s / max(steps - logging_steps, 1)
    return logging_steps + round(TARGET_TRAIN_S / per_step)


def pick_model() -> tuple[str, int, int]:
    """(model, steps to start with, logging_steps): the issue's builtin:smollm2-135m where its package is installed
    (about 7 s a step here: 6 steps, each logged, so the phases are read off real steps), else the tiny model
    (about 0.06 s a step: 700 steps, every tenth logged)."""
    from ktoforge.builtin_model import builtin_path
    from ktoforge.builtin_smollm2 import SMOLLM2, Smollm2Unavailable

    try:
        builtin_path(SMOLLM2, MODELS)
        return SMOLLM2, 6, 1
    except Smollm2Unavailable:
        return "builtin:tiny-mistral", 700, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0,
                        help="optimizer steps to start with (default: the model's, about 35-40 s of training)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each path; the fastest of each is kept (two runs of the same direct job "
                        "have differed by 18 % a step)")
    args = parser.parse_args()
    model, default_steps, logging_steps = pick_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        dataset = small_dataset(tmp_path, 64)
        (tmp_path / "system").mkdir()
        system = start_system(tmp_path / "system", ["cuda"])
        env = {**os.environ, "KTOFORGE_REDIS_URL": system.redis_url, "KTOFORGE_MODEL_CACHE_DIR": str(MODELS)}
        try:
            with system.client() as client:
                dataset_id = upload(client, dataset)
                direct, through, phases, direct_phases = [], [], [], []
                steps, jobs, runs = args.steps or default_steps, 0, 0
                while len(through) < args.repeats:
                    runs += 1
                    hp = {**HP, "max_steps": steps, "save_steps": steps, "logging_steps": logging_steps}
                    wait_worker_idle(system, jobs + 1)  # after each job its child's replacement imports: not meanwhile
                    wall, phase = direct_run(client, env, dataset, model, hp, tmp_path / f"direct-{runs}")
                    progress(runs, steps, "direct", wall, phase)
                    if phase["train_s"] < (MIN_TRAIN_S if direct else CALIBRATE_S):  # too little training
                        steps = scaled(steps, logging_steps, phase["train_s"])
                        direct, through, phases, direct_phases = [], [], [], []
                        continue
                    direct.append(wall)
                    direct_phases.append(phase)
                    wait_worker_idle(system, jobs + 1)
                    wall, phase = system_run(client, dataset_id, model, hp)
                    progress(runs, steps, "system", wall, phase)
                    jobs += 1
                    through.append(wall)
                    phases.append(phase)
        finally:
            stop_system(system)
    best, best_direct = (min(range(args.repeats), key=lambda i: walls[i]) for walls in (through, direct))
    emit("queue_direct_s", min(direct), ".2f")
    emit("queue_system_s", min(through), ".2f")
    emit("queue_overhead_ratio", min(through) / min(direct))
    emit("queue_steps", steps, ".0f")
    for name, value in phases[best].items():
        emit(name, value, ".2f")
    for name, value in direct_phases[best_direct].items():  # the same phases of the fastest direct run
        emit(f"direct_{name}", value, ".2f")


if __name__ == "__main__":
    main()

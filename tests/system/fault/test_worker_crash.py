"""Workers killed mid-training: the job resumes from its checkpoint, never trains twice, never loops; killed
mid-evaluation: the evaluation is failed with a reason, not left running."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from tests.system.fault.conftest import client, lost
from tests.system import FINISHED, events, upload, wait_status, wait_step

LONG = {"max_steps": 24, "save_steps": 4, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_length": 128, "learning_rate": 1e-3}


def training_child(system) -> int:
    """The prefork child running the task (the worker's parent is listed first)."""
    pids = system.pids("ktoforge_worker.app worker")
    assert len(pids) >= 2, f"no training child among {pids}"
    return pids[-1]


def loss_steps(evs: list[dict]) -> list[int]:
    return [e["data"]["step"] for e in evs if e["type"] == "metrics" and "loss" in e["data"]]


def lose_disk(system, job_id: str) -> None:
    """The dead worker's disk goes with it, as when the job resumes on another machine: only the API's copy
    of the checkpoint is left."""
    shutil.rmtree(Path(system.env["KTOFORGE_WORK_DIR"]) / "jobs" / job_id)


def resumed_from_the_api(evs: list[dict]) -> int:
    """The step the job resumed from, checked to be the checkpoint fetched from the API."""
    logs = [e["data"] for e in evs if e["type"] == "log"]
    fetched = next(d["step"] for d in logs if d["message"] == "checkpoint fetched from the API")
    resumed = next(d["resumed_from_step"] for d in logs if d["message"] == "resuming from checkpoint")
    assert resumed == fetched
    return resumed


def test_sigkill_training_child_resumes_from_checkpoint(system, small_dataset):
    with client(system) as c:
        job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "hyperparameters": LONG}).json()
        wait_step(c, job["id"], 9)
        os.kill(training_child(system), signal.SIGKILL)
        done = wait_status(c, job["id"], FINISHED, timeout=300)
        assert not lost(done), done
        evs = events(c, job["id"])
    assert any(e["data"]["message"] == "resuming after worker loss" for e in evs if e["type"] == "log")
    at = next(i for i, e in enumerate(evs) if e["type"] == "log" and e["data"]["message"] == "resuming from checkpoint")
    start = evs[at]["data"]["resumed_from_step"]
    assert start >= 8  # the last checkpoint before the kill, not step 0
    assert loss_steps(evs[at:]) == list(range(start + 1, 25))  # every later step exactly once
    assert done["attempts"] == 2


def test_sigkill_whole_worker_is_recovered_by_the_reaper(system, small_dataset):
    """Parent and child die and the disk is lost: the message stays unacked until the visibility timeout, so
    the reaper requeues the job from its stale heartbeat; a worker without the old disk (local mode restarts
    one) resumes it from the checkpoint the API keeps."""
    with client(system) as c:
        job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "hyperparameters": LONG}).json()
        wait_step(c, job["id"], 9)
        t0 = time.time()
        for pid in system.pids("ktoforge_worker.app worker"):
            os.kill(pid, signal.SIGKILL)
        lose_disk(system, job["id"])
        done = wait_status(c, job["id"], FINISHED, timeout=300)
        assert not lost(done), done
        recovered_in = time.time() - t0
        evs = events(c, job["id"])
    states = [e["data"] for e in evs if e["type"] == "state"]
    assert any(s["status"] == "queued" and "worker lost" in s.get("reason", "") for s in states)
    assert resumed_from_the_api(evs) >= 8  # not step 0, although the worker's own disk was gone
    assert recovered_in < 180


def test_job_that_kills_every_worker_fails_after_bounded_attempts(system, small_dataset):
    hp = {**LONG, "max_steps": 10000, "save_steps": 10000}
    with client(system) as c:
        job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "hyperparameters": hp}).json()
        seen = 0
        for attempt in range(1, 4):  # each delivery trains a step, then dies as an OOM kill would make it
            deadline = time.time() + 120
            while not (c.get(f"/v1/jobs/{job['id']}").json()["attempts"] == attempt
                       and len(loss_steps(events(c, job["id"]))) > seen):
                assert time.time() < deadline, f"attempt {attempt} never trained"
                time.sleep(0.3)
            os.kill(training_child(system), signal.SIGKILL)
            seen = len(loss_steps(events(c, job["id"])))
        done = wait_status(c, job["id"], FINISHED, timeout=180)
    assert done["status"] == "failed" and "lost 3 times" in done["reason"], done
    assert done["attempts"] == 3


def wait_evaluation(c, job_id: str, evaluation_id: str, statuses: set[str], timeout: float) -> dict:
    deadline = time.time() + timeout
    while (ev := c.get(f"/v1/jobs/{job_id}/evaluations/{evaluation_id}").json())["status"] not in statuses:
        assert time.time() < deadline, ev
        time.sleep(0.3)
    return ev


def test_sigkill_during_an_evaluation_fails_it_with_a_reason(system, small_dataset):
    """The child running an evaluation killed: its message comes back to a worker, which finds the evaluation
    already running and leaves it; once the dead child's claim lapses the reaper fails the evaluation, saying
    to queue it again, instead of leaving it 'running'. A new evaluation of the same job then succeeds."""
    hp = {**LONG, "max_steps": 2, "save_steps": 2}
    prompts = [{"id": f"p{i}", "question": f"Count to {i + 10}, slowly.", "expected_tools": []} for i in range(8)]
    with client(system) as c:
        job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "hyperparameters": hp}).json()
        assert not lost(wait_status(c, job["id"], FINISHED, timeout=300))
        ev = c.post(f"/v1/jobs/{job['id']}/evaluations", json={"prompts": prompts, "max_new_tokens": 4096}).json()
        wait_evaluation(c, job["id"], ev["id"], {"running"}, timeout=120)
        os.kill(training_child(system), signal.SIGKILL)
        t0 = time.time()
        failed = wait_evaluation(c, job["id"], ev["id"], {"failed", "succeeded"}, timeout=120)
        reaped_in = time.time() - t0
        again = c.post(f"/v1/jobs/{job['id']}/evaluations", json={"prompts": prompts[:1], "max_new_tokens": 4}).json()
        done = wait_evaluation(c, job["id"], again["id"], {"failed", "succeeded"}, timeout=180)
    assert failed["status"] == "failed" and "was lost during the evaluation" in failed["reason"], failed
    assert reaped_in < 60  # the claim's TTL (5 s here) and a reaper round, not the 6 h it took before
    assert done["status"] == "succeeded", done


def test_sigkill_mlx_worker_resumes_from_checkpoint(small_dataset, tmp_path_factory):
    """The Mac worker (solo pool: the worker is the training process) killed mid-job, its disk lost: the
    reaper requeues the job, local mode restarts the worker, and it resumes from the MLX checkpoint the API
    keeps."""
    from tests.system.fault.conftest import FAST
    from tests.system import start_system, stop_system

    # The Mac worker has no pool child to prewarm (FAST's 30 s stale outlasts the torch child's prewarm): a
    # heartbeat 8 s stale is a lost worker here, and the reaper requeues the job 22 s sooner.
    fast = {**FAST, "heartbeat_stale_s": "8"}
    mlx_system = start_system(tmp_path_factory.mktemp("mlx-fault"), ["mlx"], max_attempts="3", **fast)
    try:
        with client(mlx_system) as c:
            job = c.post("/v1/jobs", json={"dataset_id": upload(c, small_dataset), "backend": "mlx",
                                           "hyperparameters": LONG}).json()
            wait_step(c, job["id"], 9)
            (worker,) = mlx_system.pids("ktoforge_mlx.app worker")
            os.kill(worker, signal.SIGKILL)
            lose_disk(mlx_system, job["id"])
            done = wait_status(c, job["id"], FINISHED, timeout=300)
            assert not lost(done), done
            evs = events(c, job["id"])
    finally:
        stop_system(mlx_system)
    at = next(i for i, e in enumerate(evs) if e["type"] == "log" and e["data"]["message"] == "resuming from checkpoint")
    start = resumed_from_the_api(evs)
    assert start >= 8
    assert loss_steps(evs[at:]) == list(range(start + 1, 25))
    assert done["attempts"] == 2 and done["worker"].startswith("mlx@")

"""Local mode with both workers: an mlx job over HTTP, then Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import tarfile
import time

import numpy as np
import pytest

from tests.system import FINISHED, events, start_system, upload, wait_status
from tests.job_fixtures import subset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    system = start_system(tmp_path_factory.mktemp("both"), ["cuda", "mlx"])
    yield system
    if system.proc.poll() is None:
        os.killpg(system.proc.pid, signal.SIGKILL)


def test_mlx_job_over_http_and_its_peft_adapter_matches_mlx(both, reference_dataset, tiny_model_dir, tmp_path):
    import mlx.core as mx
    import mlx_lm
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hp = {"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
          "save_steps": 2, "learning_rate": 1e-2}
    with both.client() as c:
        dataset_id = upload(c, subset(reference_dataset, tmp_path / "small.jsonl", 8))
        job = c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx", "hyperparameters": hp}).json()
        done = wait_status(c, job["id"], FINISHED, timeout=300)
        assert done["status"] == "succeeded", done
        assert done["worker"].startswith("mlx@")
        steps = [e["data"]["step"] for e in events(c, job["id"]) if e["type"] == "metrics" and "loss" in e["data"]]
        assert steps == [1, 2, 3]
        for name in ("adapter_model.safetensors", "adapter_config.json", "mlx_adapter.tar"):
            (tmp_path / name).write_bytes(c.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content)
    with tarfile.open(tmp_path / "mlx_adapter.tar") as tar:
        tar.extractall(tmp_path / "mlx")
    mlx_model, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(tmp_path / "mlx"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                     tmp_path).eval()
    ids = np.array([[1, 3, 40, 41, 42, 43, 4, 50, 51, 52, 2]], dtype=np.int64)
    with torch.no_grad():
        np.testing.assert_allclose(np.array(mlx_model(mx.array(ids))), peft(torch.tensor(ids)).logits.numpy(),
                                   atol=1e-4)


def test_local_mode_restarts_the_mlx_worker_and_stops_both_workers(both):
    """The Mac worker's restart and a stop with both workers (tests/deploy covers the torch-only tree)."""
    (mlx_worker,) = both.pids("ktoforge_mlx.app worker")
    os.kill(mlx_worker, signal.SIGKILL)
    deadline = time.time() + 60
    while not [p for p in both.pids("ktoforge_mlx.app worker") if p != mlx_worker]:
        assert time.time() < deadline, "the crashed worker was not restarted"
        time.sleep(0.5)
    assert "worker-mlx exited" in both.log.read_text()
    children = both.pids("")
    assert len(children) >= 5  # redis, api, two workers, flower (and worker children)
    os.killpg(both.proc.pid, signal.SIGINT)
    assert both.proc.wait(60) == 0
    time.sleep(1)
    assert [p for p in children if os.path.exists(f"/proc/{p}") and "zombie" not in
            open(f"/proc/{p}/status").read()] == []

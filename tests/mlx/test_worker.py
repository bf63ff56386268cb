"""The Mac worker's train function on real jobs: no torch, artifacts that load in PEFT, cancel and resume."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from tests.mlx.conftest import context

ROOT_DIR = Path(__file__).resolve().parents[2]


def test_job_trains_without_torch_and_its_peft_adapter_gives_the_mlx_logits(make_job, kf_env, tiny_model_dir,
                                                                            tmp_path) -> None:
    store, job_id, dataset, root = make_job("plain")
    proc = subprocess.run([sys.executable, "-m", "tests.mlx.run_job_without_torch", job_id,
                           str(dataset), str(root)], cwd=ROOT_DIR, env={**os.environ, **kf_env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO_TORCH_OK" in proc.stdout

    metrics = list(store.iter_metrics(job_id))
    assert [m["step"] for m in metrics] == [1, 2, 3]
    seen = {k for m in metrics for k in m}  # a batch without one class has no metrics for it (as in TRL)
    for key in ("loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
                "logps/rejected", "grad_norm", "learning_rate", "epoch", "max_steps", "eta_s"):
        assert key in seen, key
    out = root / "output"
    for name in ("adapter_model.safetensors", "adapter_config.json", "mlx_adapter.tar", "metrics.jsonl",
                 "job_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name

    import mlx.core as mx
    import mlx_lm
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    mlx_dir = tmp_path / "mlx_adapter"
    with tarfile.open(out / "mlx_adapter.tar") as tar:
        tar.extractall(mlx_dir)
    mlx_model, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(mlx_dir))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, out).eval()
    ids = np.array([[1, 3, 40, 41, 42, 43, 4, 50, 51, 52, 2]], dtype=np.int64)
    ours = np.array(mlx_model(mx.array(ids)).astype(mx.float32))
    with torch.no_grad():
        theirs = peft_model(torch.tensor(ids)).logits.numpy()
        with peft_model.disable_adapter():
            plain = peft_model(torch.tensor(ids)).logits.numpy()
    assert np.abs(ours - plain).max() > 1e-3  # the adapter really changes the model
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def _adapter(root: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(root / "output" / "adapter_model.safetensors"))


def test_cancel_then_resume_continues_where_it_stopped(make_job) -> None:
    from ktoforge_mlx.worker import train

    store, straight_id, dataset, straight_root = make_job("straight")
    train(context(store, straight_id, dataset, straight_root))

    store, job_id, dataset, root = make_job("interrupted")
    store.request_cancel(job_id)  # seen after the first step
    train(context(store, job_id, dataset, root))
    assert [m["step"] for m in store.iter_metrics(job_id)] == [1]
    assert (root / "checkpoints" / "checkpoint-1" / "optimizer.safetensors").is_file()
    assert not (root / "output" / "adapter_model.safetensors").exists()

    store.r.delete(f"kf:cancel:{job_id}")  # a new delivery of the job (e.g. after the worker died)
    train(context(store, job_id, dataset, root))
    logs = [e.data for e in store.events(job_id, None, 100) if e.type == "log"]
    assert any(d.get("resumed_from_step") == 1 for d in logs)
    assert [m["step"] for m in store.iter_metrics(job_id)] == [1, 2, 3]
    resumed, straight = _adapter(root), _adapter(straight_root)
    assert resumed.keys() == straight.keys()
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], atol=1e-5, err_msg=key)

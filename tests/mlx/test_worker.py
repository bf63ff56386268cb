"""The Mac worker's train function on real jobs: no torch, artifacts that load in PEFT, cancel and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

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
    config = json.loads((out / "job_config.json").read_text())  # the lifecycle's shape, as on torch
    assert (config["backend"], config["rows"]["train"], config["mlx"]["plan"]["max_steps"]) == ("mlx", 8, 3)

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


def test_quantization_applies_to_the_base_and_a_4bit_job_trains(make_job, tiny_model_dir) -> None:
    import math

    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    import pytest

    from ktoforge.schemas import Hyperparameters
    from ktoforge_mlx.worker import apply_precision, train

    model, _ = mlx_lm.load(str(tiny_model_dir))
    apply_precision(model, Hyperparameters(quantization="nf4"))
    quantized = [m for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert quantized and all(m.bits == 4 for m in quantized)
    model, _ = mlx_lm.load(str(tiny_model_dir))
    apply_precision(model, Hyperparameters(quantization="bf16"))
    assert model.layers[0].self_attn.q_proj.weight.dtype == mx.bfloat16
    with pytest.raises(ValueError, match="optim=adamw_8bit needs a CUDA GPU"):
        apply_precision(model, Hyperparameters(optim="adamw_8bit"))

    store, job_id, dataset, root = make_job("nf4", quantization="nf4")
    train(context(store, job_id, dataset, root))
    losses = [m["loss"] for m in store.iter_metrics(job_id)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert (root / "output" / "adapter_model.safetensors").is_file()


def logged_values(root: Path) -> list[dict]:
    """metrics.jsonl without what measures time (eta_s, tokens_per_s, eval_runtime, ...)."""
    rows = [json.loads(line) for line in (root / "output" / "metrics.jsonl").read_text().splitlines()]
    timing = lambda key: key == "eta_s" or key.endswith(("_runtime", "_per_second", "_per_s"))  # noqa: E731
    return [{k: v for k, v in row.items() if not timing(k)} for row in rows]


def test_two_jobs_with_the_same_seed_report_identical_metrics(make_job) -> None:
    """LoRA's initialisation and its dropout (the job's default 0.05) both drawn from the job's seed.

    Without gradient checkpointing, so that the dropout is on (with it, the MLX backend trains the adapters
    without dropout: see trainer.enable_grad_checkpointing)."""
    from ktoforge_mlx.worker import train

    runs = []
    for name in ("first", "second"):
        store, job_id, dataset, root = make_job(name, eval_fraction=0.25, save_steps=2, gradient_checkpointing=False)
        train(context(store, job_id, dataset, root))
        runs.append(logged_values(root))
    assert [m["step"] for m in runs[0]] == [1, 2, 2, 3, 3]  # evals at save_steps and at the end
    assert runs[0] == runs[1]


def test_precomputed_reference_logps_give_the_run_that_computes_them_each_step(make_job) -> None:
    """precompute_ref_log_probs on MLX: one pass over the training batches before the first step (logged), then
    the same run as the job that computes them in every step: the same losses, KL and rewards at every log, its
    evaluations included. The LoRA dropout is on: neither pass draws from it (the reference has no adapter),
    so both runs draw the same masks."""
    from ktoforge_mlx.worker import train

    runs = []
    for name, precompute in (("each_step", False), ("precomputed", True)):
        store, job_id, dataset, root = make_job(name, eval_fraction=0.25, save_steps=2, gradient_checkpointing=False,
                                                precompute_ref_log_probs=precompute)
        train(context(store, job_id, dataset, root))
        runs.append(logged_values(root))
        logs = [e.data for e in store.events(job_id, None, 1000) if e.type == "log"]
        computed = [log for log in logs if log["message"] == "reference log-probs computed"]
        assert len(computed) == int(precompute), logs
    each_step, precomputed = runs
    assert [m["step"] for m in precomputed] == [m["step"] for m in each_step] == [1, 2, 2, 3, 3]
    for ours, theirs in zip(precomputed, each_step):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, ours, theirs)


def test_a_cancel_during_the_precompute_pass_stops_the_job_before_any_step(make_job) -> None:
    """The pass over the training set can take minutes on a large one: a cancel is seen between its batches, and
    the job stops there, with no step trained, no checkpoint and no adapter."""
    from ktoforge.backend import Stopped
    from ktoforge_mlx.worker import train

    store, job_id, dataset, root = make_job("cancelled", precompute_ref_log_probs=True)
    store.request_cancel(job_id)
    outcome = train(context(store, job_id, dataset, root))
    assert isinstance(outcome, Stopped) and outcome.step == 0
    assert list(store.iter_metrics(job_id)) == []
    logs = [e.data["message"] for e in store.events(job_id, None, 100) if e.type == "log"]
    assert "computing the reference log-probs of every training batch" in logs
    assert "reference log-probs computed" not in logs
    assert not list((root / "checkpoints").glob("checkpoint-*"))
    assert not (root / "output" / "adapter_model.safetensors").exists()


def test_the_mac_worker_uses_public_mlx_lm_apis_only() -> None:
    source = (ROOT_DIR / "native-mac" / "ktoforge_mlx" / "worker.py").read_text()
    assert "_download" not in source and "._tokenizer" not in source

"""The job option precompute_ref_log_probs reaches TRL's KTOConfig, and a torch job with it on trains and logs."""

from __future__ import annotations

import json

from ktoforge_worker.train import train


def test_precompute_ref_log_probs_reaches_ktoconfig_and_the_job_trains(make_ctx):
    ctx = make_ctx(precompute_ref_log_probs=True)
    train(ctx)
    resolved = json.loads((ctx.output_dir / "job_config.json").read_text())
    assert resolved["cuda"]["kto_config"]["precompute_ref_log_probs"] is True
    metrics = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "metrics" and "loss" in e.data]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["loss"] == m["loss"] for m in metrics)  # finite: not NaN
    assert (ctx.output_dir / "adapter_model.safetensors").exists()


def test_off_by_default(make_ctx):
    from ktoforge_worker.train import kto_config

    ctx = make_ctx()
    assert ctx.job.hyperparameters.precompute_ref_log_probs is False
    assert kto_config(ctx, {}, has_eval=False).precompute_ref_log_probs is False

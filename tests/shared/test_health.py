"""Training-health checks (ktoforge.health): each warning from a real torch run built to trigger it, a NaN run
failing at its step, and the rules on hand-written metric sequences."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ktoforge.health import HealthMonitor, TrainingDiverged
from ktoforge.lifecycle import JobContext
from tests.job_fixtures import make_ctx  # noqa: F401 (the fixture: a real JobContext on the tests' Redis)


def step(n: int, total: int = 9, **metrics: float) -> dict:
    return {"loss": 0.69, "kl": 0.0, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "step": n, "max_steps": total,
            **metrics}


def test_a_nan_or_infinite_loss_fails_at_its_step() -> None:
    monitor = HealthMonitor()
    monitor.check(step(1))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TrainingDiverged, match="at step 2"):
            monitor.check(step(2, loss=bad))


def test_each_warning_is_said_once() -> None:
    monitor = HealthMonitor()
    assert monitor.check(step(1, kl=1.5))[0].startswith("KL 1.5 > 1 at step 1")
    assert monitor.check(step(2, kl=2.0)) == []


def test_one_label_steps_and_summary_logs() -> None:
    monitor = HealthMonitor()
    only_desirable = {k: v for k, v in step(1).items() if k != "rewards/rejected"}
    assert "only desirable rows" in monitor.check(only_desirable)[0]
    assert monitor.check({"train_loss": 0.5, "step": 9, "max_steps": 9}) == []  # the run's summary: not a step


@pytest.mark.parametrize(("margins", "warned"), [([0.0, 0.01, 0.02, 0.05], False), ([0.02, 0.01, 0.0, 0.3], True),
                                                  ([0.0, 0.0, 0.0, 0.0], True)])
def test_margins_judged_at_the_end_of_the_first_third(margins: list[float], warned: bool) -> None:
    monitor = HealthMonitor()
    said = [w for i, m in enumerate(margins, 1) for w in monitor.check(step(i, total=9, **{"rewards/margins": m}))]
    assert bool(said) == warned and (not said or "did not rise over the first third" in said[0])


def run_warnings(ctx: JobContext) -> list[str]:
    from ktoforge_worker.train import train

    train(ctx)
    return [e.data["message"] for e in ctx.store.events(ctx.job.id, None, 1000) if e.type == "warning"]


@pytest.mark.slow
def test_a_run_with_a_high_learning_rate_warns_of_divergence(make_ctx) -> None:  # noqa: F811
    warnings = run_warnings(make_ctx(max_steps=8, learning_rate=0.2))
    assert any(w.startswith("KL ") and "diverging" in w for w in warnings), warnings


@pytest.mark.slow
def test_a_run_on_one_label_batches_warns(make_ctx) -> None:  # noqa: F811
    warnings = run_warnings(make_ctx(n_rows=8, n_undesirable=1, max_steps=3))
    assert any("its batches held only desirable rows" in w for w in warnings), warnings


@pytest.mark.slow
def test_a_run_that_does_not_learn_warns_about_its_margins(make_ctx) -> None:  # noqa: F811
    warnings = run_warnings(make_ctx(max_steps=6, learning_rate=1e-9))
    assert any("did not rise over the first third" in w for w in warnings), warnings


@pytest.mark.slow
def test_a_model_that_produces_nan_fails_at_step_1(make_ctx, tiny_model_dir: Path, tmp_path: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file, save_file

    from ktoforge.settings import get_settings

    broken = tmp_path / "models" / "nan-mistral"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights["lm_head.weight"] = np.full_like(weights["lm_head.weight"], np.nan)
    save_file(weights, broken / "model.safetensors")
    monkeypatch.setenv("KTOFORGE_MODEL_ROOTS", f'["{tmp_path / "models"}"]')
    get_settings.cache_clear()
    ctx = make_ctx(max_steps=3)
    ctx.job = ctx.job.model_copy(update={"model": str(broken)})
    ctx.settings = get_settings()
    with pytest.raises(TrainingDiverged, match="grad_norm became nan at step 1"):
        run_warnings(ctx)
    assert not [e for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "metrics"]  # no NaN streamed

"""The metric names declared once (ktoforge.metrics) are what both backends report: a torch job and an MLX job on
the same data, every log checked against the declaration, and the two jobs' names equal apart from the few
documented as one backend's own."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from ktoforge import metrics as names

pytest.importorskip("mlx.core")
pytest.importorskip("trl")

# Logs every step, evaluates at step 2 (save_steps) and at the end (step 3), on 4 held-out rows of 16.
HP = {"max_steps": 3, "save_steps": 2, "logging_steps": 1, "eval_fraction": 0.25, "max_length": 64,
      "per_device_train_batch_size": 4}


def run_logs(ctx: Any, train: Any) -> list[dict[str, Any]]:
    """Train the job; its metrics events, checked one by one against the declaration."""
    train(ctx)
    backend = "mlx" if train.__module__.startswith("ktoforge_mlx") else "torch"
    logs = [e.data for e in ctx.store.events(ctx.job.id, None, 500) if e.type == "metrics"]
    for log in logs:
        kind = names.log_kind(log)
        extra = set(log) - names.declared(kind) - names.own(backend)
        missing = names.declared(kind) - names.optional(kind) - set(log)
        assert not extra and not missing, (backend, kind, extra, missing)
    return logs


def all_names(logs: list[dict[str, Any]], kind: str) -> set[str]:
    return {name for log in logs if names.log_kind(log) == kind for name in log}


def test_torch_and_mlx_report_the_declared_names(make_ctx) -> None:
    from ktoforge_mlx.worker import train as mlx_train
    from ktoforge_worker.train import train as torch_train

    torch_ctx = make_ctx(**HP)
    torch_logs = run_logs(torch_ctx, torch_train)
    shutil.rmtree(torch_ctx.output_dir.parent)
    mlx_logs = run_logs(make_ctx(**HP), mlx_train)

    for kind in ("train", "eval"):
        torch_names, mlx_names = all_names(torch_logs, kind), all_names(mlx_logs, kind)
        assert torch_names - names.own("torch") == mlx_names - names.own("mlx"), kind
        assert names.declared(kind) <= torch_names  # both classes were trained on: nothing optional left out
    assert [m["step"] for m in mlx_logs if names.log_kind(m) == "eval"] == [2, 3]
    assert [m["step"] for m in torch_logs if names.log_kind(m) == "eval"] == [2, 3]
    assert {names.log_kind(m) for m in torch_logs} == {"train", "eval", "summary"}


def test_the_declaration_is_consistent() -> None:
    """Each name is declared once: no backend's own name is also a shared one, and none is both backends'."""
    shared = names.declared("train") | names.declared("eval")
    assert not (names.own("torch") & shared) and not (names.own("mlx") & shared)
    assert not names.own("torch") & names.own("mlx")
    assert names.optional("train") <= names.declared("train") and names.optional("eval") <= names.declared("eval")
    assert names.log_kind({"loss": 1.0}) == "train" and names.log_kind({"eval_loss": 1.0}) == "eval"

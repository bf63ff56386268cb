"""curves.png from metrics.jsonl: five panels, eval points when there are any, nothing for no metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ktoforge.curves import PANELS, read_metrics, series, write_curves


def metrics_file(tmp_path: Path, with_eval: bool) -> Path:
    rows = [{"loss": 0.9 - s * 0.05, "kl": 0.01 * s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s,
             "rewards/margins": 0.2 * s, "step": s, "max_steps": 8} for s in range(1, 9)]
    rows[2]["rewards/rejected"] = float("nan")  # a batch with no undesirable row: TRL logs NaN
    if with_eval:
        rows.append({"eval_loss": 0.7, "eval_kl": 0.02, "eval_rewards/margins": 0.5, "step": 8, "max_steps": 8})
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"loss": 0.1, "st')  # a torn last line
    return path


def test_draws_a_png_with_every_panel(tmp_path: Path):
    out = tmp_path / "curves.png"
    assert write_curves(metrics_file(tmp_path, with_eval=True), out, "job · model")
    image = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert image.shape == (700, 1200)
    assert image.std() > 10  # lines and text drawn, not a blank canvas


def test_eval_points_add_marks_to_the_figure(tmp_path: Path):
    plain, evald = tmp_path / "a.png", tmp_path / "b.png"
    (tmp_path / "x").mkdir()
    write_curves(metrics_file(tmp_path / "x", with_eval=False), plain)
    write_curves(metrics_file(tmp_path, with_eval=True), evald)
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(evald)))


def test_series_skip_nan_and_torn_lines(tmp_path: Path):
    rows = read_metrics(metrics_file(tmp_path, with_eval=True))
    assert len(rows) == 9
    steps, values = series(rows, "rewards/rejected")
    assert 3.0 not in steps and len(steps) == 7
    assert series(rows, "eval_loss") == ([8.0], [0.7])
    assert set(PANELS) == {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins"}


def test_no_metrics_means_no_png(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert not write_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")
    assert not write_curves(tmp_path / "missing.jsonl", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()

"""``curves.png``: the training curves of a job, drawn from its metrics.jsonl at the end of every job.

One figure, five panels (TRL's names): loss, kl, rewards/chosen, rewards/rejected and rewards/margins against
the optimizer step, with the held-out evaluation points (``eval_*``) drawn as markers on the same panels.
matplotlib's Agg backend draws without a display (workers run headless); it is chosen explicitly and only
here, so importing this module never touches a GUI toolkit. Both backends' lifecycles call ``write_curves``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PANELS = ("loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins")
FILENAME = "curves.png"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The logged rows of metrics.jsonl; a half-written last line (a crash) is skipped, not fatal."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, finite values only (TRL logs NaN for a batch without a class)."""
    points = [(float(r["step"]), float(r[key])) for r in rows
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def write_curves(metrics_path: Path, out_path: Path, title: str = "") -> bool:
    """Draw the PNG; False (and nothing written) when there is no metric to draw."""
    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    if not any(series(rows, key)[0] for key in PANELS):
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot global state in a long-lived worker

    fig = Figure(figsize=(12, 7), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3).flatten()
    for ax, key in zip(axes, PANELS):
        steps, values = series(rows, key)
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, label="train")
        eval_steps, eval_values = series(rows, f"eval_{key}")
        if eval_steps:
            ax.plot(eval_steps, eval_values, "o", color="tab:red", label="eval")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if eval_steps:
            ax.legend(fontsize="small")
    axes[-1].axis("off")
    if title:
        fig.suptitle(title)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png")
    return True

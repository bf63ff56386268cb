"""The TrainerCallback that connects TRL to the job: metrics out as events, cancel in, every step;
each checkpoint handed to the job once the Trainer has written it whole."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ktoforge.lifecycle import JobContext


class JobCallback(TrainerCallback):
    """Streams each log (TRL's metric names + step, max_steps, eta_s) and stops on cancel."""

    def __init__(self, ctx: JobContext, metrics_file: Path) -> None:
        self.ctx = ctx
        self.metrics_file = metrics_file
        self.started: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = (time.time(), state.global_step)  # global_step > 0 after a resume

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        metrics = {**logs, "step": state.global_step, "max_steps": state.max_steps}
        t0, step0 = self.started or (time.time(), 0)
        done = state.global_step - step0
        if done > 0:
            metrics["eta_s"] = round((time.time() - t0) / done * (state.max_steps - state.global_step), 1)
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        self.ctx.report(metrics)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        self.ctx.checkpoint_saved(Path(args.output_dir) / f"checkpoint-{step}", step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.ctx.should_stop():
            control.should_training_stop = True
            control.should_save = False

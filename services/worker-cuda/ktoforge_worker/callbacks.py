"""The TrainerCallback that connects TRL to the job: metrics out (the lifecycle writes and streams them),
cancel and lost lease in, every step (no save or evaluation after a stop); each checkpoint handed to the
lifecycle once the Trainer has written it whole."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from ktoforge.lifecycle import JobContext


class JobCallback(TrainerCallback):
    """Streams each log (TRL's metric names + step, max_steps, eta_s) and stops when the job says so.

    The evaluation policy both backends share (every ``save_steps``, and once at the end of a completed run,
    not after a stop) is transformers' own with ``eval_steps=save_steps``: its flow callback (5.17) adds the
    last step's evaluation unless that step is an eval step already; this one only cancels it at a stop."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
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
        self.ctx.report(metrics)
        if "loss" in logs:  # asked between this step's end and its log: stop now, not after one more step
            self._stop_if_asked(control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ctx.checkpoint_saved(self.ctx.checkpoint_path(state.global_step), state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Runs after transformers' own flow callback, so it can cancel the save and evaluation it decided."""
        self._stop_if_asked(control)

    def _stop_if_asked(self, control: Any) -> None:
        """A cancel or a lost lease ends training after this step, with no save or evaluation of it."""
        if self.ctx.should_stop():
            control.should_training_stop = True
            control.should_save = control.should_evaluate = False

"""Training health: what a run's own metrics say about it, while it runs, on either backend.

Fed by JobContext.report with each log both backends already emit (TRL's names: loss, kl,
rewards/chosen, rewards/rejected, rewards/margins, step, max_steps), so one module watches torch and
MLX alike. A NaN or infinite loss fails the job at once, naming the step (every step after it is wasted
compute; transformers hides a NaN loss behind the running mean, so a NaN grad_norm counts too); the
other findings are warnings, each said once per run, that the CLI's bar prints:

- KL above 1: TRL's KL estimate (clamped at 0) between policy and reference has grown past what a KTO
  run normally reaches: the policy is diverging (learning rate too high, β too low);
- rewards/margins not rising over the first third of the steps: the run is not learning the preference;
- a logged step with rewards for only one label: its batches held only desirable or only undesirable rows,
  and KTO's margins and KL estimate need both (TRL then omits the missing class's rewards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KL_LIMIT = 1.0
# transformers replaces a NaN/inf loss in its logs by the running mean (logging_nan_inf_filter, on by default),
# so the loss alone can look fine while the gradients are NaN: either one means the run has diverged.
DIVERGENCE_SIGNS = ("loss", "grad_norm")
MIN_STEPS_FOR_TREND = 6  # fewer steps than this: a third of them is too few points to call a trend
RISE_TOLERANCE = 1e-3  # margins must rise by more than this (relative to their size) to count as rising


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the job fails with this message."""


@dataclass
class HealthMonitor:
    """State across one run's logs: which warnings were said, and the margins seen so far."""

    said: set[str] = field(default_factory=set)
    margins: list[tuple[int, float]] = field(default_factory=list)

    def check(self, metrics: dict[str, Any]) -> list[str]:
        """Warnings newly raised by this log; TrainingDiverged for a NaN/inf loss. Summary and eval logs
        (no ``loss`` key) are not training steps and are skipped."""
        if "loss" not in metrics:
            return []
        step = int(metrics.get("step") or 0)
        for name in DIVERGENCE_SIGNS:
            value = metrics.get(name)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise TrainingDiverged(f"{name} became {value} at step {step}: training diverged; lower "
                                       "learning_rate (or raise beta) and check the model and data")
        found = [self._kl(metrics, step), self._one_label(metrics, step), self._margins(metrics, step)]
        return [warning for warning in found if warning]

    def _once(self, kind: str, message: str) -> str | None:
        if kind in self.said:
            return None
        self.said.add(kind)
        return message

    def _kl(self, metrics: dict[str, Any], step: int) -> str | None:
        kl = metrics.get("kl")
        if isinstance(kl, (int, float)) and kl > KL_LIMIT:
            return self._once("kl", f"KL {kl:.3g} > {KL_LIMIT:g} at step {step}: the policy is diverging from the "
                                    "reference; lower learning_rate or raise beta")
        return None

    def _one_label(self, metrics: dict[str, Any], step: int) -> str | None:
        has = {label for label, key in (("desirable", "rewards/chosen"), ("undesirable", "rewards/rejected"))
               if key in metrics}
        if len(has) == 1:
            return self._once("one_label", f"step {step}: its batches held only {has.pop()} rows; KTO compares "
                                           "both labels within a batch: shuffle the data or raise "
                                           "per_device_train_batch_size")
        return None

    def _margins(self, metrics: dict[str, Any], step: int) -> str | None:
        """Once the first third of the steps is done: did the margins' later half beat their earlier half?"""
        margin, total = metrics.get("rewards/margins"), metrics.get("max_steps")
        if isinstance(margin, (int, float)) and math.isfinite(margin):
            self.margins.append((step, float(margin)))
        if not isinstance(total, int) or total < MIN_STEPS_FOR_TREND or step < total / 3 or "margins" in self.said:
            return None
        self.said.add("margins")  # judged once, at the end of the first third
        values = [m for _, m in self.margins]
        if len(values) < 2:
            return None
        half = len(values) // 2
        earlier, later = sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)
        if later - earlier > RISE_TOLERANCE * (1 + abs(earlier)):
            return None
        return (f"rewards/margins did not rise over the first third of the steps ({earlier:.3g} -> {later:.3g} by "
                f"step {step}): the run is not learning the preference; check the labels, raise learning_rate "
                "or the data's size")

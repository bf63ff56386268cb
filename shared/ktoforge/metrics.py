"""The names of the metrics a job reports (its "metrics" events and metrics.jsonl), declared once.

They are TRL 1.14.2 KTOTrainer's (what its ``_compute_loss`` appends and its ``log`` averages), transformers'
Trainer's (loss, grad_norm, learning_rate, epoch, and the speed figures of an evaluation), and ours (step,
max_steps, eta_s). The torch backend gets them from TRL itself; the MLX backend computes each as TRL does
(ktoforge_mlx.kto and .trainer, checked against TRL by tests/mlx/test_parity.py). A log is one of three kinds:
a training log (every ``logging_steps``), an evaluation log (every ``save_steps`` and at the end of a completed
run, when the job holds rows out) and, on torch only, transformers' summary at the end of ``train()``.
A few names exist on one backend only: ONLY_TORCH and ONLY_MLX say which, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

# TRL's KTO metrics, per log: the mean of what each micro-batch appended since the last log.
# num_tokens is TRL's running count of the tokens trained on (attention mask), not a mean.
KTO: tuple[str, ...] = ("kl", "entropy", "num_tokens", "rewards/chosen", "rewards/rejected", "rewards/margins",
                        "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected")

# Per-class means: TRL leaves one out of a log whose batches held no row of that class (margins: of either).
PER_CLASS: frozenset[str] = frozenset(n for n in KTO if n.endswith(("/chosen", "/rejected", "/margins")))

# transformers' Trainer: loss (the mean over the steps since the last log of each step's loss), the pre-clip
# gradient norm, the learning rate the step used, and epoch (micro-batches consumed / batches per epoch).
TRAINER: tuple[str, ...] = ("loss", "grad_norm", "learning_rate", "epoch")

# Ours, on every log of either backend: the optimizer step, the planned steps, the seconds still to go.
PROGRESS: tuple[str, ...] = ("step", "max_steps", "eta_s")

TRAIN_LOG: tuple[str, ...] = TRAINER + KTO + PROGRESS

# transformers' evaluation loop (eval_loss weighs each batch's loss by its rows) and TRL's metrics over the
# held-out rows (eval_num_tokens is still the count of tokens trained on), then epoch and ours.
EVAL_SPEED: tuple[str, ...] = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
EVAL_LOG: tuple[str, ...] = ("eval_loss", *(f"eval_{n}" for n in KTO), *EVAL_SPEED, "epoch", *PROGRESS)

ONLY_TORCH: Mapping[str, str] = {
    "train_runtime": "transformers' summary log at the end of train(); the MLX loop writes none",
    "train_samples_per_second": "transformers' summary log at the end of train()",
    "train_steps_per_second": "transformers' summary log at the end of train()",
    "total_flos": "transformers' summary log at the end of train()",
    "train_loss": "transformers' summary log at the end of train(): the mean loss over the whole run",
    "aux_loss": "TRL's router loss of mixture-of-experts models (output_router_logits); MLX trains without it",
}
ONLY_MLX: Mapping[str, str] = {
    "tokens_per_s": "the MLX loop's throughput (tokens trained on per second of this run); transformers logs "
                    "its own only with include_num_input_tokens_seen, which the torch worker leaves off",
}

LogKind = Literal["train", "eval", "summary"]


def log_kind(log: Mapping[str, Any]) -> LogKind:
    """Which of the three kinds a log is (transformers' summary holds train_loss; an evaluation, eval_loss)."""
    if "train_loss" in log:
        return "summary"
    return "eval" if "eval_loss" in log else "train"


def declared(kind: LogKind) -> frozenset[str]:
    """The names a log of ``kind`` holds on both backends (some may be absent: see ``optional``)."""
    return frozenset({"train": TRAIN_LOG, "eval": EVAL_LOG, "summary": ("epoch", *PROGRESS)}[kind])


def optional(kind: LogKind) -> frozenset[str]:
    """Declared names a log of ``kind`` may lack: a class's per-class means when its batches held none."""
    prefix = "eval_" if kind == "eval" else ""
    return frozenset(prefix + n for n in PER_CLASS) if kind != "summary" else frozenset()


def own(backend: Literal["torch", "mlx"]) -> frozenset[str]:
    """The names only ``backend`` reports (ONLY_TORCH or ONLY_MLX)."""
    return frozenset(ONLY_TORCH if backend == "torch" else ONLY_MLX)

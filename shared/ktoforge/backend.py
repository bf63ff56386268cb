"""The contract between the job lifecycle and a training backend (TRL on torch, our KTO in MLX).

A backend supplies three steps: ``load`` (the model the lifecycle resolved), ``prepare`` (data, adapter, the
trainer or loop) and ``train`` (which returns an Outcome). Everything both backends need besides that (model
resolution with hub access and token, checkpoint naming, lookup and retention, metrics.jsonl, job_config.json,
what a lost lease means, the worker folder) is the lifecycle's, done once: in the spirit of mlx-lm's
``TrainingCallback`` (the loop reports, its host decides) and of typed task results (a value says how the
run ended, instead of flags the caller re-reads and may read differently from the loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ktoforge.lifecycle import JobContext
    from ktoforge.models import ModelSource


class StopReason(str, Enum):
    """Why a run ended before its last step."""

    cancelled = "cancelled"  # the user asked
    lease_lost = "lease lost"  # another worker holds the job now: nothing of this run may reach the API


@dataclass(frozen=True)
class Completed:
    """Every planned step ran, and the adapter (with its tokenizer files) is in the job's output folder."""

    step: int


@dataclass(frozen=True)
class Stopped:
    """The run ended at ``step`` because it was told to stop; nothing was written to the output folder."""

    step: int
    reason: StopReason


Outcome = Completed | Stopped


@dataclass
class Prepared:
    """What ``prepare`` hands ``train``: the backend's own state, and what job_config.json records of the run."""

    state: Any  # the trainer (torch) or the loop's inputs (MLX): only the backend reads it
    rows: dict[str, int]  # {"train": n, "eval": m}
    weights: dict[str, float]  # desirable_weight and undesirable_weight as resolved ('auto' balanced)
    config: dict[str, Any]  # the backend's own resolved settings (KTOConfig, the MLX plan, ...)


@dataclass(frozen=True)
class TrainingBackend:
    """One training backend: its name (the job's queue, schemas.Backend) and its three steps."""

    name: str
    load: Callable[[JobContext, ModelSource], Any]
    prepare: Callable[[JobContext, Any], Prepared]
    train: Callable[[JobContext, Prepared], Outcome]

"""Where a job goes, and whether it can fit there, decided at submit from the workers' heartbeats.

A job that cannot fit on any live worker of its queue is refused with the estimate and each worker's
memory (422), unless ``force``; ``backend: "auto"`` picks a queue whose worker can hold it, GPU first;
a job that fits only just is accepted with a warning. Nothing is downloaded to decide: the model's shape is
known by name (Mistral-7B family, builtin) or read from a local config.json (ktoforge.fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ktoforge.builtin_model import BUILTINS
from ktoforge.dataset.split import training_rows
from ktoforge.fit import GB, NEAR_FIT, Estimate, estimate, known_shape, plan_of
from ktoforge.jobs import JobStore
from ktoforge.models import ModelError, local_model_dir
from ktoforge.queue import QUEUES
from ktoforge.schemas import Job, JobCreate
from ktoforge.settings import Settings
from ktoforge_api.errors import unprocessable

DEVICE_ORDER = {"cuda": 0, "apple": 1, "cpu": 2}  # auto: a GPU first, then unified memory, then a CPU
# KTO's usual range (TRL's docs and the KTO paper: β 0.01-0.5 around the default 0.1; LoRA learning rates
# 5e-7 to 5e-4), with a margin: outside it a run rarely learns anything useful, so the user hears it before it starts.
BETA_RANGE, LR_RANGE = (0.01, 1.0), (1e-7, 5e-3)


@dataclass
class Candidate:
    queue: str
    worker: dict[str, Any]
    capacity_gb: float | None  # None: a worker that does not advertise its device (the check cannot apply)
    estimate: Estimate | None


@dataclass
class Placement:
    backend: str
    warnings: list[str] = field(default_factory=list)  # about the job: also events, shown by the CLI's bar
    notes: list[str] = field(default_factory=list)  # about the system now (no worker yet): in the response only
    estimate_gb: dict[str, float] | None = None


def device_kind(queue: str, device: dict[str, Any]) -> str:
    """What this worker trains on for that queue: the torch worker uses a CUDA GPU, the MLX one Apple silicon;
    anything else runs on the CPU (and its RAM)."""
    kind = device.get("kind")
    if (queue, kind) in (("cuda", "cuda"), ("mlx", "apple")):
        return str(kind)
    return "cpu"


def capacity_gb(kind: str, device: dict[str, Any]) -> float | None:
    """Total memory the job may use on that device: the GPU's, the unified memory, or the RAM."""
    value = device.get("memory_total_gb") if kind in ("cuda", "apple") else device.get("ram_total_gb")
    return float(value) if value is not None else None


def local_dir(model: str, settings: Settings) -> Path | None:
    """Where a config.json may be read without a download: a local model, or a builtin already generated."""
    if model in BUILTINS:
        folder = Path(settings.model_cache_dir) / BUILTINS[model][0]
        return folder if folder.is_dir() else None
    if model.startswith(("/", ".", "~")):
        try:
            return local_model_dir(model, settings)
        except ModelError:
            return None
    return None


def candidates(spec: JobCreate, workers: dict[str, list[dict[str, Any]]], settings: Settings) -> list[Candidate]:
    """Each live worker of the queues the job may go to, with the estimate for that worker's device."""
    shape = known_shape(spec.model, local_dir(spec.model, settings))
    queues = QUEUES if spec.backend == "auto" else (spec.backend,)
    found = []
    for queue in queues:
        for worker in workers.get(queue, []):
            device = worker.get("device") or {}
            kind = device_kind(queue, device)
            est = estimate(shape, plan_of(spec.hyperparameters, spec.lora, kind)) if shape and device else None
            found.append(Candidate(queue, worker, capacity_gb(kind, device) if device else None, est))
    return found


def _fits(c: Candidate) -> bool:
    return c.estimate is None or c.capacity_gb is None or c.estimate.total <= c.capacity_gb * GB


def _refusal(spec: JobCreate, found: list[Candidate]) -> Exception:
    """422 naming the estimate and each worker's memory, in GB, with the figures also as data."""
    figures = [{"worker": c.worker.get("node"), "queue": c.queue, "device": (c.worker.get("device") or {}).get("name"),
                "memory_gb": c.capacity_gb, "estimate_gb": c.estimate.as_gb() if c.estimate else None}
               for c in found]
    per_worker = "; ".join(f"{f['worker']} ({f['device']}): {f['memory_gb']} GB, needs "
                           f"{f['estimate_gb']['total'] if f['estimate_gb'] else '?'} GB" for f in figures)
    error = unprocessable(["body", "model"], f"{spec.model} does not fit on any live worker of "
                          f"{'any queue' if spec.backend == 'auto' else 'queue ' + spec.backend}: {per_worker}. "
                          "Lower max_length or per_device_train_batch_size, use quantization nf4, or send "
                          "force: true to queue it anyway", "does_not_fit")
    error.detail[0]["workers"] = figures
    return error


def place(spec: JobCreate, workers: dict[str, list[dict[str, Any]]], settings: Settings) -> Placement:
    """The queue the job goes to and the warnings to return; raises 422 when nothing live can hold it."""
    warnings = range_warnings(spec)
    found = candidates(spec, workers, settings)
    fitting = sorted((c for c in found if _fits(c)),
                     key=lambda c: (DEVICE_ORDER.get(device_kind(c.queue, c.worker.get("device") or {}), 3),
                                    -(c.capacity_gb or 0)))
    if found and not fitting and not spec.force:
        raise _refusal(spec, found)
    chosen = fitting[0] if fitting else (found[0] if found else None)
    backend = spec.backend if spec.backend != "auto" else (chosen.queue if chosen else "cuda")
    notes = []
    if not found:
        notes.append(f"no live worker on queue {backend} yet: the job waits for one, and its memory was not "
                        "checked")
    elif chosen and chosen.estimate and chosen.capacity_gb:
        share = chosen.estimate.total / (chosen.capacity_gb * GB)
        if share > 1:
            warnings.append(f"forced: needs about {chosen.estimate.total / GB:.1f} GB, more than the "
                            f"{chosen.capacity_gb:.1f} GB of {chosen.worker.get('node')}")
        elif share > NEAR_FIT:
            warnings.append(f"fits only just: about {chosen.estimate.total / GB:.1f} GB of the "
                            f"{chosen.capacity_gb:.1f} GB of {chosen.worker.get('node')} ({share:.0%})")
    elif chosen and chosen.estimate is None and chosen.worker.get("device"):
        notes.append(f"no memory estimate: the shape of {spec.model} is not known without downloading it")
    return Placement(backend, warnings, notes, chosen.estimate.as_gb() if chosen and chosen.estimate else None)


def range_warnings(spec: JobCreate) -> list[str]:
    """Learning rate and β far outside KTO's usual range: legal, but said before hours are spent."""
    hp, out = spec.hyperparameters, []
    if not BETA_RANGE[0] <= hp.beta <= BETA_RANGE[1]:
        out.append(f"beta {hp.beta} is far outside KTO's usual range {BETA_RANGE[0]}-{BETA_RANGE[1]} (default 0.1)")
    if not LR_RANGE[0] <= hp.learning_rate <= LR_RANGE[1]:
        out.append(f"learning_rate {hp.learning_rate} is far outside the usual range for KTO with LoRA "
                    f"({LR_RANGE[0]:g}-{LR_RANGE[1]:g})")
    return out


def precompute_warnings(spec: JobCreate, desirable: int, undesirable: int) -> list[str]:
    """precompute_ref_log_probs pays over full epochs only: its pass runs the reference over every training row
    once, where the steps would have run it over the rows the job trains on. A job that trains on less than an
    epoch does more reference work with it than without: said at submit (the option stays as asked). The
    training rows are counted as the worker's split will leave them (per label: split.training_rows)."""
    hp = spec.hyperparameters
    train_rows = training_rows(desirable, undesirable, hp.eval_fraction)
    if not hp.precompute_ref_log_probs or train_rows <= 0:
        return []
    if hp.max_steps > 0:
        epochs = hp.max_steps * hp.per_device_train_batch_size * hp.gradient_accumulation_steps / train_rows
    else:
        epochs = hp.num_train_epochs
    if epochs >= 1:
        return []
    return [f"precompute_ref_log_probs runs the reference model over all {train_rows} training rows before the "
            f"first step, and this job trains on about {epochs:.0%} of an epoch: that pass costs more than the "
            "steps save (it pays from one epoch on)"]


def record_warnings(store: JobStore, job: Job, placement: Placement) -> Job:
    """All kept on the record (the response shows them); the job's own also as warning events (the CLI's bar
    shows those)."""
    for warning in placement.warnings:
        store.add_event(job.id, "warning", {"message": warning})
    everything = placement.warnings + placement.notes
    return store.update(job.id, warnings=everything) if everything else job

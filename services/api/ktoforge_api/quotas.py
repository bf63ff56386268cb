"""What one job may ask of the machine: bounds an operator sets (KTOFORGE_MAX_*), checked at submit.

The schema holds the hard limits of each field; these are the operator's, lower and changeable without a
release. Every bound a job crosses is reported (422), each naming its field, its value and its setting.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from ktoforge.schemas import JobCreate
from ktoforge.settings import Settings


def quota_errors(spec: JobCreate, settings: Settings) -> list[dict[str, Any]]:
    """One FastAPI-style error per bound the job crosses (empty: within every bound)."""
    hp, lora = spec.hyperparameters, spec.lora
    tokens = hp.per_device_train_batch_size * hp.max_length * hp.gradient_accumulation_steps
    checks = [
        (["body", "hyperparameters"], tokens, settings.max_tokens_per_step, "KTOFORGE_MAX_TOKENS_PER_STEP",
         ("tokens per optimizer step (per_device_train_batch_size × max_length × gradient_accumulation_steps = "
          f"{hp.per_device_train_batch_size} × {hp.max_length} × {hp.gradient_accumulation_steps} = {tokens})")),
        (["body", "hyperparameters", "max_steps"], hp.max_steps, settings.max_steps, "KTOFORGE_MAX_STEPS",
         f"max_steps {hp.max_steps}"),
        (["body", "lora", "r"], lora.r, settings.max_lora_r, "KTOFORGE_MAX_LORA_R", f"LoRA rank r {lora.r}"),
        (["body", "lora", "target_modules"], len(lora.target_modules), settings.max_target_modules,
         "KTOFORGE_MAX_TARGET_MODULES", f"{len(lora.target_modules)} target_modules"),
    ]
    return [{"loc": loc, "msg": f"{what} exceeds the bound {bound} ({setting})", "type": "quota_exceeded"}
            for loc, value, bound, setting, what in checks if value > bound]


def check_quotas(spec: JobCreate, settings: Settings, queued: int) -> None:
    """422 for a job over its bounds; 429 when ``queued`` jobs already fill the queues (checked first here, before
    the dataset and the model are; JobStore.create checks it again, in the transaction that stores the job)."""
    if errors := quota_errors(spec, settings):
        raise HTTPException(422, detail=errors)
    if queued >= settings.max_queued_jobs:
        raise queue_full(queued, settings)


def queue_full(queued: int, settings: Settings) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=(
        f"{queued} jobs are queued; the limit is {settings.max_queued_jobs} (KTOFORGE_MAX_QUEUED_JOBS): "
        "wait for some to start or cancel some"))

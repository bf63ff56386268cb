"""Machine presets (ktoforge.presets) with the memory each needs for a model, before anything is submitted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ktoforge.fit import estimate, known_shape, plan_of
from ktoforge.presets import PRESETS
from ktoforge.schemas import JobCreate, PresetInfo
from ktoforge_api.deps import require_user
from ktoforge_api.errors import unprocessable

router = APIRouter(prefix="/v1/presets", tags=["presets"], dependencies=[Depends(require_user)])
DEFAULT_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"  # what the presets were written for


@router.get("", response_model=list[PresetInfo])
def list_presets(
    model: Annotated[str, Query(max_length=512, description="Model the estimate is for (its shape must be known "
                                                            "without the hub)")] = DEFAULT_MODEL,
) -> list[PresetInfo]:
    """Each preset's settings and its peak-memory estimate (GB, by term) on the machine it names."""
    shape = known_shape(model)
    if shape is None:
        raise unprocessable(["query", "model"], f"the shape of {model!r} is not known here; known: the "
                            "Mistral-7B family and builtin:tiny-mistral")
    out = []
    for preset in PRESETS.values():
        spec = JobCreate.model_validate({"dataset_id": "0" * 64, "model": model, "preset": preset.name})
        kind = "cuda" if preset.backend == "cuda" else "apple"
        est = estimate(shape, plan_of(spec.hyperparameters, spec.lora, kind))
        out.append(PresetInfo(name=preset.name, description=preset.description, backend=preset.backend,
                              device_memory_gb=preset.device_memory_gb, model=model,
                              hyperparameters=spec.hyperparameters, lora=spec.lora, estimate_gb=est.as_gb(),
                              fits=est.total / 1e9 <= preset.device_memory_gb))
    return out

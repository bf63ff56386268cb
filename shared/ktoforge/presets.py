"""Presets for the two machines the seed's users own: an 8 GB RTX 3070 and a 24 GB M4 Mac.

Both follow the seed's recipe: 4-bit NF4 weights; LoRA r16, α16 on all seven projections; cosine schedule
with 10 % warmup; max_length 1024; one epoch; gradient checkpointing; a per-device batch of 2 (KTO needs
≥ 2) with accumulation to an effective 16. The CUDA one uses 8-bit AdamW (bitsandbytes) to save the
optimizer state; MLX has no 8-bit optimizer, so the Mac keeps AdamW in float32 (it has the memory).

A job names a preset; whatever the job states explicitly overrides it (``apply_preset``). Plain data only:
the schemas import this module.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ktoforge.schemas import LORA_TARGETS

RECIPE: dict[str, Any] = {
    "quantization": "nf4", "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "max_length": 1024,
    "num_train_epochs": 1.0, "max_steps": -1, "gradient_checkpointing": True,
    "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
}
RECIPE_LORA: dict[str, Any] = {"r": 16, "lora_alpha": 16, "target_modules": list(LORA_TARGETS)}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    backend: str
    device_memory_gb: float  # what the machine has, for the estimate's comparison
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=lambda: dict(RECIPE_LORA))

    def body(self) -> dict[str, Any]:
        """The job-body fragment this preset stands for (copies: callers may change them)."""
        return {"backend": self.backend, "hyperparameters": copy.deepcopy(self.hyperparameters),
                "lora": copy.deepcopy(self.lora)}


PRESETS: dict[str, Preset] = {
    "rtx3070-8gb": Preset("rtx3070-8gb", "NVIDIA RTX 3070 (8 GB): Mistral-7B in 4-bit NF4 with Unsloth, 8-bit AdamW",
                          "cuda", 8.0, {**RECIPE, "optim": "adamw_8bit"}),
    "m4-24gb": Preset("m4-24gb", "Apple M4 with 24 GB unified memory: Mistral-7B in 4-bit with MLX, AdamW",
                      "mlx", 24.0, {**RECIPE, "optim": "adamw_torch"}),
}


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """The job body with its preset's values filled in wherever the body itself says nothing.

    Merged one level deep (hyperparameters and lora key by key), so ``--set max_steps=10`` with a preset
    keeps the rest of the preset. An unknown name is left for the schema to refuse, naming the choices.
    """
    preset = PRESETS.get(str(data.get("preset")))
    if preset is None:
        return data
    merged = {**data}
    for key, value in preset.body().items():
        if isinstance(value, dict):
            given = data.get(key)
            merged[key] = {**value, **given} if isinstance(given, dict) else given if given is not None else value
        else:
            merged.setdefault(key, value)
    return merged

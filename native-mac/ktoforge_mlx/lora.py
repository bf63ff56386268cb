"""LoRA on an mlx-lm model, from the job's PEFT-named settings, and the mlx-lm adapter files.

The job's ``lora_dropout`` is mlx-lm's LoRA dropout: it drops the adapter input of the policy passes while
the model trains (``model.train()``), as PEFT's LoRA dropout does; evaluation (``model.eval()``) and the
reference pass (kto.lora_disabled, which computes no adapter at all) see no dropout. With gradient
checkpointing there is none either (trainer.enable_grad_checkpointing says why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers

from ktoforge.schemas import LoraSettings

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def lora_parameters(model: nn.Module, lora: LoraSettings) -> dict[str, Any]:
    """mlx-lm's lora_parameters: PEFT's alpha/r becomes mlx-lm's scale; target names become layer keys."""
    keys = sorted(name for name, module in model.layers[0].named_modules()
                  if name.split(".")[-1] in lora.target_modules
                  and isinstance(module, (nn.Linear, nn.QuantizedLinear)))
    if not keys:
        raise ValueError(f"no linear layer of this model is named like {lora.target_modules}")
    return {"rank": lora.r, "scale": lora.lora_alpha / lora.r, "dropout": lora.lora_dropout,
            "keys": keys}


def add_lora(model: nn.Module, params: dict[str, Any]) -> None:
    """Freeze the base and wrap the targeted linears of every block; only lora_a/lora_b train."""
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), params)


def save_adapter(model: nn.Module, params: dict[str, Any], out_dir: Path) -> None:
    """adapters.safetensors + adapter_config.json, loadable by ``mlx_lm.load(..., adapter_path=out_dir)``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / ADAPTER_WEIGHTS), dict(tree_flatten(model.trainable_parameters())))
    config = {"fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": params}
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))

"""mlx-lm LoRA adapter → PEFT adapter, so a Mac-trained result loads in transformers/PEFT (and Ollama) like the CUDA one.

mlx-lm stores ``model.layers.N.self_attn.q_proj.lora_a`` as (in, r) and ``lora_b`` as (r, out) with the
update ``scale · x A B``; PEFT stores ``lora_A.weight`` (r, in) and ``lora_B.weight`` (out, r) with the
update scaled by ``lora_alpha / r``. So the matrices are transposed and ``lora_alpha = scale · r``.
Uses numpy and safetensors only (no torch, no MLX), so it runs in the Mac worker and anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


def peft_tensors(mlx_weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in mlx_weights.items():
        module, leaf = key.rsplit(".", 1)
        if leaf not in ("lora_a", "lora_b"):
            raise ValueError(f"{key}: only LoRA adapters convert to PEFT (found a {leaf!r} tensor)")
        name = "lora_A" if leaf == "lora_a" else "lora_B"
        out[f"base_model.model.{module}.{name}.weight"] = np.ascontiguousarray(value.T.astype(np.float32))
    return out


def to_peft(mlx_dir: Path, out_dir: Path, base_model: str) -> None:
    """Write adapter_model.safetensors + adapter_config.json (PEFT LoRA) for the adapter in ``mlx_dir``."""
    config = json.loads((mlx_dir / "adapter_config.json").read_text())
    if config.get("fine_tune_type", "lora") != "lora":
        raise ValueError(f"only LoRA adapters convert to PEFT, not {config['fine_tune_type']!r}")
    lora = config["lora_parameters"]
    tensors = peft_tensors(load_file(str(mlx_dir / "adapters.safetensors")))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / PEFT_WEIGHTS), metadata={"format": "pt"})
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lora["rank"], "lora_alpha": lora["scale"] * lora["rank"], "lora_dropout": lora.get("dropout", 0.0),
        "target_modules": sorted({k.split(".")[-1] for k in lora["keys"]}), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False, "use_dora": False,
        "layers_to_transform": None, "modules_to_save": None, "init_lora_weights": True,
    }
    (out_dir / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2))

"""Greedy generation for an evaluation on MLX: mlx-lm without, then with, the job's own mlx-lm adapter.

The adapter is the one the worker trained (``mlx_adapter.tar``), applied by mlx-lm itself as
``mlx_lm.load(..., adapter_path=...)`` does, so the adapter column is what a user of mlx-lm gets. A job
trained on the torch backend has only a PEFT adapter; it is converted back to mlx-lm's layout first.
Prompts are rendered by the shared chat-template code and tokenized without special tokens, as in training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ktoforge.dataset import ChatTemplate
from ktoforge.evaluation.prompts import EvalPrompt, prompt_text


def _complete(model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int,
              guard: Callable[[], None]) -> list[dict[str, Any]]:
    import mlx_lm

    out = []
    for text in texts:
        guard()
        ids = tokenizer.encode(text, add_special_tokens=False)
        out.append({"text": mlx_lm.generate(model, tokenizer, prompt=ids, max_tokens=max_new_tokens)})
    return out


def mlx_adapter_dir(job_files: Path) -> Path:
    """The job's mlx-lm adapter folder; made from the PEFT adapter for a job trained with torch."""
    folder = job_files / "mlx_adapter"
    if (folder / "adapters.safetensors").is_file():
        return folder
    import numpy as np
    from safetensors.numpy import load_file, save_file

    peft = json.loads((job_files / "adapter_config.json").read_text())
    tensors = {}
    for key, value in load_file(str(job_files / "adapter_model.safetensors")).items():
        module, leaf = key.removeprefix("base_model.model.").rsplit(".", 2)[0], key.split(".")[-2]
        tensors[f"{module}.{'lora_a' if leaf == 'lora_A' else 'lora_b'}"] = np.ascontiguousarray(value.T)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapters.safetensors"))
    keys = sorted({k.split(".layers.")[1].split(".", 1)[1].rsplit(".", 1)[0] for k in tensors})
    layers = len({k.split(".layers.")[1].split(".")[0] for k in tensors})
    (folder / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": layers,
        "lora_parameters": {"rank": peft["r"], "scale": peft["lora_alpha"] / peft["r"], "dropout": 0.0, "keys": keys}}))
    return folder


def generate(model_ref: str, job_files: Path, prompts: Sequence[EvalPrompt], max_new_tokens: int,
             guard: Callable[[], None] = lambda: None) -> dict[str, list[dict[str, Any]]]:
    """``{"base": [...], "adapter": [...]}``, one ``{"text": ...}`` per prompt, in order. ``guard()`` runs before
    each prompt and raises to stop (the evaluation's claim lapsed: ktoforge.evaluation.run)."""
    import mlx_lm

    template = ChatTemplate.from_dir(job_files if (job_files / "tokenizer_config.json").is_file() else model_ref)
    texts = [prompt_text(p, template) for p in prompts]
    options = {"tokenizer_config": {"trust_remote_code": False}, "trust_remote_code": False}
    model, tokenizer = mlx_lm.load(model_ref, **options)
    base = _complete(model, tokenizer, texts, max_new_tokens, guard)
    model, tokenizer = mlx_lm.load(model_ref, adapter_path=str(mlx_adapter_dir(job_files)), **options)
    return {"base": base, "adapter": _complete(model, tokenizer, texts, max_new_tokens, guard)}

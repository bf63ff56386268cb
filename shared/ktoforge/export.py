"""Running a trained adapter elsewhere: merged safetensors, an Ollama Modelfile, mlx-lm's fused model.

The merge is done in numpy (``W + scale · B A`` per LoRA pair, PEFT's formula) so it runs on any machine that
has the client, without torch or MLX, and for an adapter from either backend: the MLX worker writes the
same PEFT files (ktoforge_mlx.convert). The Modelfile names the base with ``FROM`` and the PEFT adapter
with ``ADAPTER`` (Ollama imports safetensors adapters of Llama and Mistral models), with the chat template
and stop tokens of the model's family, so ``ollama create`` gives a model that answers in the trained format.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
MODELFILE = "Modelfile"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json")

MISTRAL_TEMPLATE = ('TEMPLATE """{{- if .System }}[INST] {{ .System }}\n\n{{ .Prompt }}[/INST]'
                    '{{- else }}[INST] {{ .Prompt }}[/INST]{{- end }} {{ .Response }}"""')
MISTRAL_STOPS = ("[INST]", "[/INST]", "</s>")
CHATML_TEMPLATE = ('TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                   '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"""')
CHATML_STOPS = ("<|im_start|>", "<|im_end|>")


class ExportError(ValueError):
    """The adapter or base cannot be exported as asked; says which file or setting."""


def lora_scale(config: dict) -> float:
    """PEFT's scaling: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA."""
    r = config["r"]
    return config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)


def lora_deltas(adapter_dir: Path) -> dict[str, np.ndarray]:
    """Base weight name → ``scale · B @ A`` (float32) for every LoRA pair of a PEFT adapter folder."""
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / PEFT_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise ExportError(f"{adapter_dir / PEFT_CONFIG}: only plain LoRA adapters merge (not DoRA or other PEFT types)")
    tensors = load_file(str(adapter_dir / PEFT_WEIGHTS))
    scale, deltas = lora_scale(config), {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        deltas[f"{module}.weight"] = scale * (b.astype(np.float32) @ a.astype(np.float32))
    if not deltas:
        raise ExportError(f"{adapter_dir / PEFT_WEIGHTS} holds no LoRA pair")
    return deltas


def merge(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """A full model folder (config, tokenizer, model.safetensors in float32) with the adapter merged in."""
    from safetensors.numpy import load_file, save_file

    deltas = lora_deltas(adapter_dir)
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(base_dir.glob("*.safetensors")):
        weights |= load_file(str(shard))
    missing = sorted(set(deltas) - set(weights))
    if missing:
        raise ExportError(f"the adapter targets weights the base model at {base_dir} does not have: {missing[:3]}")
    for name, delta in deltas.items():
        weights[name] = weights[name].astype(np.float32) + delta
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((base_dir / "config.json").read_text())
    config["torch_dtype"] = "float32"
    config.pop("quantization_config", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(base_dir, out_dir)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    return out_dir


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def chat_family(chat_template: str | None) -> str:
    """'chatml' for <|im_start|> templates (SmolLM2, Qwen), else 'mistral' (the product's default family)."""
    return "chatml" if chat_template and "<|im_start|>" in chat_template else "mistral"


def modelfile_text(base: str, adapter: str, family: str = "mistral", model: str = "") -> str:
    """An Ollama Modelfile: FROM the base, ADAPTER the PEFT folder, the family's template and stop tokens."""
    template, stops = (CHATML_TEMPLATE, CHATML_STOPS) if family == "chatml" else (MISTRAL_TEMPLATE, MISTRAL_STOPS)
    lines = ["# ollama create my-model -f Modelfile   (in the folder `ktoforge job export ID --format ollama` "
             "writes)", *([f"# {base}: the base model {model} (safetensors); {adapter}: the job's PEFT adapter"]
                          if model else []),
             f"FROM {base}", f"ADAPTER {adapter}", template,
             *(f'PARAMETER stop "{stop}"' for stop in stops), "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"


def job_modelfile(model: str, tokenizer_dir: Path | None) -> str:
    """The Modelfile a job ships: the base expected in ./base and the adapter in ./adapter, the layout
    ``ktoforge job export --format ollama`` writes (Ollama reads both as safetensors folders)."""
    return modelfile_text("./base", "./adapter", chat_family(chat_template_of(tokenizer_dir)), model)


def chat_template_of(tokenizer_dir: Path | None) -> str | None:
    """The folder's chat template, from tokenizer_config.json or chat_template.jinja (transformers 5 writes
    the latter on save_pretrained); None where it has neither."""
    from ktoforge.dataset import ChatTemplate

    if tokenizer_dir is None:
        return None
    try:
        return ChatTemplate.from_dir(tokenizer_dir).source
    except (OSError, ValueError, StopIteration):  # RenderError is a ValueError
        return None

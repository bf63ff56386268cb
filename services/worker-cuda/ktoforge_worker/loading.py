"""Loading the base model and tokenizer: Unsloth 4-bit where CUDA and Unsloth exist, else transformers.

Unsloth must be imported before trl/transformers/peft in the training process, so the check happens
before anything else of the training stack is imported (this runs in the fresh child of each job).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ktoforge.schemas import Job
from ktoforge.settings import Settings


def unsloth_usable() -> bool:
    if importlib.util.find_spec("unsloth") is None:
        return False
    import torch

    return torch.cuda.is_available()


def tokenizer_files(model: str, settings: Settings) -> Path:
    """A local folder with the tokenizer and chat template (downloaded from the hub for hub ids)."""
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, token=settings.hf_token.get_secret_value() or None,
                                  allow_patterns=["*.json", "*.jinja", "tokenizer*"]))


def load(model: str, job: Job, settings: Settings) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config for TRL or None when the model already carries its LoRA)."""
    hp, lora = job.hyperparameters, job.lora
    token = settings.hf_token.get_secret_value() or None
    if token:
        os.environ.setdefault("HF_TOKEN", token)
    if unsloth_usable():
        os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(Path(settings.work_dir) / "unsloth_compiled_cache"))
        from unsloth import FastLanguageModel  # noqa: I001 (must precede trl/transformers/peft)

        base, tokenizer = FastLanguageModel.from_pretrained(model, max_seq_length=hp.max_length, load_in_4bit=True,
                                                            dtype=None, token=token)
        peft_model = FastLanguageModel.get_peft_model(
            base, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
            target_modules=lora.target_modules, bias="none", random_state=hp.seed,
            use_gradient_checkpointing="unsloth" if hp.gradient_checkpointing else False)
        return peft_model, tokenizer, None
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, token=token)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, token=token)
    config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    return base, tokenizer, config

"""Loading the base model and tokenizer: Unsloth where CUDA and Unsloth exist (4-bit unless the job's
``quantization`` says otherwise), else transformers (bitsandbytes for nf4/int8 on CUDA, a dtype otherwise).

Unsloth patches TRL's trainers (KTO: log-probs in chunks instead of full [batch, seq, vocab] logits) only when
it is imported before trl, transformers and peft: a class bound earlier stays TRL's unpatched one. So the
decision is made from ``find_spec`` and torch alone, and ``import_unsloth_first`` runs before anything of the
training stack is imported (this runs in the pool's fresh child, which serves one job, so nothing was imported
before it: see import_training_stack).
Every load passes ``trust_remote_code=False``: model folders and hub repos are user-chosen, their code is not
run.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ktoforge.schemas import CUDA_ONLY_OPTIMIZERS, Hyperparameters, Job
from ktoforge.settings import Settings


def unsloth_usable() -> bool:
    """Unsloth installed (found without importing it) and a CUDA device present (torch may come first)."""
    if importlib.util.find_spec("unsloth") is None:
        return False
    import torch

    return torch.cuda.is_available()


def import_unsloth_first(settings: Settings) -> bool:
    """Import Unsloth before trl/transformers/peft/datasets when this job will use it; whether it will.

    ``UNSLOTH_DATASET_NUM_PROC=1``: Unsloth's KTO config would otherwise replace ``dataset_num_proc=None``
    (tokenize in this process) with 2-8 workers forked from a process that already holds CUDA. Set, not
    defaulted: forking from a CUDA holder is never what this worker wants.
    """
    if not unsloth_usable():
        return False
    os.environ["UNSLOTH_DATASET_NUM_PROC"] = "1"
    # Its compiled-kernel cache goes to the worker's own folder (not the working directory, not shared).
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(Path(settings.work_dir) / "unsloth_compiled_cache"))
    import unsloth  # noqa: F401, I001 (patches trl, transformers and peft: must precede them)

    return True


def import_training_stack(settings: Settings) -> bool:
    """Import what every job of this worker imports, in the order training needs (torch, Unsloth where it will be
    used, then trl, transformers, peft, datasets); whether Unsloth is used.

    For the pool's idle child (ktoforge_worker.app's prewarm): the seconds these imports take (6-8 on this
    project's 2-core CI machines, without Unsloth) are then spent before a job arrives, not in its run. Loads
    no model and holds no memory a job would not hold; Unsloth, on a GPU, may create the CUDA context it needs
    anyway."""
    import torch  # noqa: F401

    use_unsloth = import_unsloth_first(settings)
    import datasets  # noqa: F401
    import peft  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: F401
    from trl import KTOConfig, KTOTrainer  # noqa: F401  (trl's lazy module: this runs the trainer's imports)

    return use_unsloth


# What TRL's data preparation reads of a model (tokenizer and chat template): a hub model's weights are not
# fetched for it (transformers downloads those itself when it loads the model).
TOKENIZER_FILES = ["*.json", "*.jinja", "tokenizer*"]


def check_precision(hp: Hyperparameters, cuda: bool) -> None:
    """Refuse, before anything loads, what only bitsandbytes on a CUDA GPU does: quietly training in fp32 with a
    32-bit optimizer instead would need several times the memory the job was planned (and admitted) for."""
    if cuda:
        return
    if hp.quantization in ("nf4", "int8"):
        raise ValueError(f"quantization={hp.quantization} needs a CUDA GPU (bitsandbytes) and this worker has none: "
                         "choose auto, bf16 or fp32, or a GPU worker's queue")
    if hp.optim in CUDA_ONLY_OPTIMIZERS:
        raise ValueError(f"optim={hp.optim} needs a CUDA GPU (bitsandbytes) and this worker has none: choose "
                         "adamw_torch, or a GPU worker's queue")


def _unsloth_precision(quantization: str) -> dict[str, Any]:
    """FastLanguageModel.from_pretrained's arguments for the job's quantization (auto: 4-bit, Unsloth's default)."""
    import torch

    return {"load_in_4bit": quantization in ("auto", "nf4"), "load_in_8bit": quantization == "int8",
            "dtype": {"bf16": torch.bfloat16, "fp32": torch.float32}.get(quantization)}


def _transformers_precision(quantization: str) -> dict[str, Any]:
    """AutoModelForCausalLM.from_pretrained's arguments: bitsandbytes for nf4/int8 (CUDA), else a dtype."""
    import torch

    if quantization in ("nf4", "int8"):
        from transformers import BitsAndBytesConfig

        bnb = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
               if quantization == "nf4" else BitsAndBytesConfig(load_in_8bit=True))
        return {"quantization_config": bnb, "dtype": torch.bfloat16}
    return {"dtype": torch.bfloat16 if quantization == "bf16" else torch.float32}


def load(model: str, job: Job, settings: Settings, use_unsloth: bool) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config for TRL or None when the model already carries its LoRA)."""
    hp, lora = job.hyperparameters, job.lora
    token = settings.hf_token.get_secret_value() or None
    if token:
        os.environ.setdefault("HF_TOKEN", token)
    if use_unsloth:
        from unsloth import FastLanguageModel

        base, tokenizer = FastLanguageModel.from_pretrained(model, max_seq_length=hp.max_length, token=token,
                                                            trust_remote_code=False,
                                                            **_unsloth_precision(hp.quantization))
        peft_model = FastLanguageModel.get_peft_model(
            base, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
            target_modules=lora.target_modules, bias="none", random_state=hp.seed,
            use_gradient_checkpointing="unsloth" if hp.gradient_checkpointing else False)
        return peft_model, tokenizer, None
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, token=token, trust_remote_code=False)
    base = AutoModelForCausalLM.from_pretrained(model, token=token, trust_remote_code=False,
                                                **_transformers_precision(hp.quantization))
    config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    return base, tokenizer, config


def restore_lora_dropout(model: Any, p: float) -> int:
    """Give PEFT's LoRA dropout modules back the job's ``lora_dropout``; the number of modules set.

    TRL's KTOTrainer sets ``p = 0`` on every ``nn.Dropout`` of the model (``disable_dropout=True``: the base
    model's dropout would make policy and reference log-probs differ by noise), which silences LoRA's own
    dropout on the adapter input too. That one only acts on the adapter path (the reference is the model with
    the adapter disabled), so it gets its p back and the base model's dropout stays off."""
    import torch.nn as nn

    restored = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for dropout in dropouts.values():
                if isinstance(dropout, nn.Dropout):  # nn.Identity where the adapter was made with p = 0
                    dropout.p = p
                    restored += 1
    return restored

"""Greedy generation for an evaluation: the base model and the adapter side by side, from one loaded model.

PEFT's ``disable_adapter()`` gives the base model's outputs from the same weights in memory, so the two
columns differ only by the adapter. Prompts are rendered by the shared chat-template code (the one training
used) and tokenized without special tokens, as in training; batches are left-padded so every row's
continuation starts at the same position. Greedy decoding: the comparison must not depend on sampling luck.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ktoforge.dataset import ChatTemplate
from ktoforge.evaluation.prompts import EvalPrompt, prompt_text

BATCH = 8


def _load(model_ref: str, job_files: Path) -> tuple[Any, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = job_files if (job_files / "tokenizer_config.json").is_file() else model_ref
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(model_ref, dtype=dtype, trust_remote_code=False)
    model = PeftModel.from_pretrained(base, str(job_files)).to("cuda" if cuda else "cpu").eval()
    return model, tokenizer


def _generate_batch(model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    # Special tokens kept: Mistral's [TOOL_CALLS] is one, and it is what the scoring looks for. The reply ends
    # at the first EOS; what follows is padding of rows that finished early.
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
    return [t.split(tokenizer.eos_token)[0].replace(tokenizer.pad_token, "") for t in texts]


def generate(model_ref: str, job_files: Path, prompts: Sequence[EvalPrompt], max_new_tokens: int,
             guard: Callable[[], None] = lambda: None) -> dict[str, list[dict[str, Any]]]:
    """``{"base": [...], "adapter": [...]}``, one ``{"text": ...}`` per prompt, in order. ``guard()`` runs before
    each batch and raises to stop (the evaluation's claim lapsed: ktoforge.evaluation.run)."""
    model, tokenizer = _load(model_ref, job_files)
    template = ChatTemplate.from_dir(job_files if (job_files / "tokenizer_config.json").is_file() else model_ref)
    texts = [prompt_text(p, template) for p in prompts]
    outputs: dict[str, list[dict[str, Any]]] = {"base": [], "adapter": []}
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        guard()
        with model.disable_adapter():
            outputs["base"] += [{"text": t} for t in _generate_batch(model, tokenizer, chunk, max_new_tokens)]
        outputs["adapter"] += [{"text": t} for t in _generate_batch(model, tokenizer, chunk, max_new_tokens)]
    return outputs

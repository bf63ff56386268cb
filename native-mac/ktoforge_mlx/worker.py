"""The MLX backend's train function for ``ktoforge.lifecycle.run_job``: load, LoRA, KTO, artifacts.

Artifacts (flat names, uploaded by the lifecycle): the PEFT adapter under the same names as the CUDA
worker's (adapter_model.safetensors + adapter_config.json) so every consumer treats both alike, the
mlx-lm adapter as mlx_adapter.tar (adapters.safetensors + adapter_config.json: ``tar xf`` gives a folder
``mlx_lm.load(..., adapter_path=...)`` accepts), the tokenizer, metrics.jsonl and job_config.json.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from ktoforge.lifecycle import JobContext
from ktoforge.models import resolve
from ktoforge.schemas import CUDA_ONLY_OPTIMIZERS, Hyperparameters


def _load(model_ref: str) -> tuple[Any, Any, Path]:
    """(model, mlx-lm tokenizer wrapper, local model folder); hub ids download through huggingface_hub."""
    import mlx_lm
    from mlx_lm.utils import _download

    path = _download(model_ref)
    # Explicitly no code from the model's folder, for the weights and the tokenizer alike: the folder is the
    # user's choice, the code would run as the worker.
    model, tokenizer = mlx_lm.load(str(path), tokenizer_config={"trust_remote_code": False}, trust_remote_code=False)
    return model, tokenizer, path


def apply_precision(model: Any, hp: Hyperparameters) -> None:
    """The job's ``quantization`` on MLX (before LoRA is added: mlx-lm's LoRA wraps quantized linears too):
    nf4 becomes MLX's affine 4-bit (group 64; MLX has no NormalFloat), int8 its 8-bit, bf16/fp32 a dtype, auto
    the model as stored. bitsandbytes' 8-bit and paged optimizers do not exist here: refused, like on a CPU."""
    import mlx.core as mx
    import mlx.nn as nn

    if hp.optim in CUDA_ONLY_OPTIMIZERS:
        raise ValueError(f"optim={hp.optim} needs a CUDA GPU (bitsandbytes); the MLX worker trains with AdamW: "
                         "choose adamw_torch")
    if hp.quantization in ("nf4", "int8"):
        nn.quantize(model, group_size=64, bits=4 if hp.quantization == "nf4" else 8)
    elif hp.quantization in ("bf16", "fp32"):
        model.set_dtype(mx.bfloat16 if hp.quantization == "bf16" else mx.float32)


def _pad_id(tokenizer: Any) -> int:
    """TRL's rule: the pad token, else EOS."""
    hf = tokenizer._tokenizer
    return hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id


def _reporter(ctx: JobContext, path: Path):
    def report(metrics: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        ctx.report(metrics)

    return report


def train(ctx: JobContext) -> None:
    import mlx.core as mx

    from ktoforge_mlx.convert import to_peft
    from ktoforge_mlx.data import batches, collate, prepare
    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.lora import add_lora, lora_parameters, save_adapter
    from ktoforge_mlx.trainer import (Plan, enable_grad_checkpointing, evaluate, latest_checkpoint,
                                      load_checkpoint, make_optimizer)
    from ktoforge_mlx.trainer import train as train_loop

    job, hp = ctx.job, ctx.job.hyperparameters
    model_ref = resolve(job.model, ctx.settings.model_cache_dir)
    model, tokenizer, model_dir = _load(model_ref)
    encode = lambda text: tokenizer._tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    train_rows, eval_rows, weights = prepare(ctx.dataset_path, model_dir, encode, hp)
    if not train_rows:
        raise ValueError(f"no training row has a prompt shorter than max_length={hp.max_length}")
    apply_precision(model, hp)
    params = lora_parameters(model, job.lora)
    mx.random.seed(hp.seed)  # the LoRA initialisation is the job's, reproducible
    add_lora(model, params)
    if hp.gradient_checkpointing:
        enable_grad_checkpointing(model)
    cfg = KTOSettings(beta=hp.beta, loss_type=hp.loss_type, **weights)
    chunks = batches(train_rows, hp.per_device_train_batch_size)
    plan = Plan.of(len(chunks), hp.gradient_accumulation_steps, hp.num_train_epochs, hp.max_steps,
                   learning_rate=hp.learning_rate, lr_scheduler_type=hp.lr_scheduler_type,
                   warmup_ratio=hp.warmup_ratio, logging_steps=hp.logging_steps, save_steps=hp.save_steps)
    optimizer = make_optimizer(plan)
    start = 0
    if (checkpoint := latest_checkpoint(ctx.checkpoint_dir)) is not None:
        start = load_checkpoint(checkpoint, model, optimizer)
        ctx.log("resuming from checkpoint", resumed_from_step=start)
    pad = _pad_id(tokenizer)
    report = _reporter(ctx, ctx.output_dir / "metrics.jsonl")
    train_loop(model, optimizer, lambda i: collate(chunks[i], pad, hp.max_length), cfg, plan, report,
               ctx.should_stop, ctx.checkpoint_dir, start, ctx.checkpoint_saved)
    if ctx.should_stop():
        return
    if eval_rows:
        eval_batches = [collate(b, pad, hp.max_length) for b in batches(eval_rows, hp.per_device_train_batch_size)]
        report({**evaluate(model, eval_batches, cfg), "step": plan.max_steps, "max_steps": plan.max_steps})
    mlx_dir = ctx.checkpoint_dir / "mlx_adapter"
    save_adapter(model, params, mlx_dir)
    with tarfile.open(ctx.output_dir / "mlx_adapter.tar", "w") as tar:
        for name in ("adapters.safetensors", "adapter_config.json"):
            tar.add(mlx_dir / name, arcname=name)
    to_peft(mlx_dir, ctx.output_dir, job.model if not job.model.startswith("builtin:") else model_ref)
    tokenizer._tokenizer.save_pretrained(str(ctx.output_dir))
    resolved = {"job": job.model_dump(mode="json"), "model_path": str(model_dir), "backend": "mlx",
                "rows": {"train": len(train_rows), "eval": len(eval_rows)}, "resolved_weights": weights,
                "lora_parameters": params, "plan": {"max_steps": plan.max_steps,
                                                    "steps_per_epoch": plan.steps_per_epoch}}
    (ctx.output_dir / "job_config.json").write_text(json.dumps(resolved, indent=2, default=str))

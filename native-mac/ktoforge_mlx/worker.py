"""The MLX backend (``BACKEND``) of ``ktoforge.lifecycle``: load, LoRA, KTO, artifacts.

The model arrives resolved by the lifecycle (hub access and KTOFORGE_HF_TOKEN checked); checkpoint naming,
lookup and retention, metrics.jsonl and job_config.json are the lifecycle's too. Only public mlx-lm APIs:
``mlx_lm.load`` on a local folder, and its TokenizerWrapper, which hands every attribute it does not define
to the Hugging Face tokenizer (``encode``, ``pad_token_id``, ``save_pretrained``).

Artifacts (flat names, uploaded by the lifecycle): the PEFT adapter under the same names as the CUDA
worker's (adapter_model.safetensors + adapter_config.json) so every consumer treats both alike, the
mlx-lm adapter as mlx_adapter.tar (adapters.safetensors + adapter_config.json: ``tar xf`` gives a folder
``mlx_lm.load(..., adapter_path=...)`` accepts), and the tokenizer.
"""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ktoforge.backend import Completed, Outcome, Prepared, TrainingBackend
from ktoforge.lifecycle import JobContext, run_backend
from ktoforge.models import ModelSource
from ktoforge.schemas import CUDA_ONLY_OPTIMIZERS, Hyperparameters


@dataclass
class Loaded:
    model: Any
    tokenizer: Any  # mlx-lm's TokenizerWrapper
    model_dir: Path
    source: ModelSource


@dataclass
class MLXRun:
    """What the training loop needs, built by ``prepare``."""

    loaded: Loaded
    lora: dict[str, Any]  # mlx-lm's lora_parameters
    kto: Any  # ktoforge_mlx.kto.KTOSettings
    plan: Any  # ktoforge_mlx.trainer.Plan
    get_batch: Any  # dataloader batch i of an epoch
    eval_batches: list[Any] | None


def load_model(ctx: JobContext, source: ModelSource) -> Loaded:
    """mlx-lm's model and tokenizer from a local folder (a hub model fetched first, with the worker's token, the
    files mlx-lm itself would fetch). Explicitly no code from the model's folder, for the weights and the
    tokenizer alike: the folder is the user's choice, the code would run as the worker."""
    import mlx_lm
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    model_dir = source.local_dir(list(DEFAULT_ALLOW_PATTERNS))
    model, tokenizer = mlx_lm.load(str(model_dir), tokenizer_config={"trust_remote_code": False},
                                   trust_remote_code=False)
    return Loaded(model, tokenizer, model_dir, source)


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


def pad_id(tokenizer: Any) -> int:
    """TRL's rule: the pad token, else EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prepare(ctx: JobContext, loaded: Loaded) -> Prepared:
    """Rows, precision, LoRA (seeded: the job's initialisation is reproducible) and the step plan."""
    import mlx.core as mx

    from ktoforge_mlx.data import batches, collate
    from ktoforge_mlx.data import prepare as to_rows
    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.lora import add_lora, lora_parameters
    from ktoforge_mlx.trainer import Plan, enable_grad_checkpointing

    hp, model = ctx.job.hyperparameters, loaded.model
    encode = lambda text: loaded.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    train_rows, eval_rows, weights = to_rows(ctx.dataset_path, loaded.model_dir, encode, hp)
    if not train_rows:
        raise ValueError(f"no training row has a prompt shorter than max_length={hp.max_length}")
    apply_precision(model, hp)
    params = lora_parameters(model, ctx.job.lora)
    mx.random.seed(hp.seed)  # the LoRA initialisation is the job's, reproducible
    add_lora(model, params)
    if hp.gradient_checkpointing:
        enable_grad_checkpointing(model)
    pad, size = pad_id(loaded.tokenizer), hp.per_device_train_batch_size
    chunks = batches(train_rows, size)
    plan = Plan.of(len(chunks), hp.gradient_accumulation_steps, hp.num_train_epochs, hp.max_steps,
                   learning_rate=hp.learning_rate, lr_scheduler_type=hp.lr_scheduler_type,
                   warmup_ratio=hp.warmup_ratio, logging_steps=hp.logging_steps, save_steps=hp.save_steps)
    held = [collate(b, pad, hp.max_length) for b in batches(eval_rows, size)] if eval_rows else None
    run = MLXRun(loaded, params, KTOSettings(beta=hp.beta, loss_type=hp.loss_type, **weights), plan,
                 lambda i: collate(chunks[i], pad, hp.max_length), held)
    config = {"lora_parameters": params, "local_model_dir": str(loaded.model_dir),
              "plan": {"max_steps": plan.max_steps, "steps_per_epoch": plan.steps_per_epoch}}
    return Prepared(run, {"train": len(train_rows), "eval": len(eval_rows)}, weights, config)


def run_loop(ctx: JobContext, prepared: Prepared) -> Outcome:
    """The training loop from the job's latest checkpoint, if any; the adapter written when it completed.
    Evaluation (every save_steps and at the end) is the loop's, as on torch."""
    from ktoforge_mlx.trainer import load_checkpoint, make_optimizer
    from ktoforge_mlx.trainer import train as train_loop

    run: MLXRun = prepared.state
    optimizer = make_optimizer(run.plan)
    start = 0
    if (resume := ctx.latest_checkpoint()) is not None:
        start = load_checkpoint(resume[1], run.loaded.model, optimizer)
        ctx.log("resuming from checkpoint", resumed_from_step=start)
    references = None
    if ctx.job.hyperparameters.precompute_ref_log_probs:
        references = precompute(ctx, run)
        if references is None:
            return ctx.outcome(start)
    step = train_loop(run.loaded.model, optimizer, run.get_batch, run.kto, run.plan, ctx.report,
                      should_stop=ctx.should_stop, checkpoint_root=ctx.checkpoint_dir, start_step=start,
                      on_checkpoint=ctx.checkpoint_saved, eval_batches=run.eval_batches, references=references)
    outcome = ctx.outcome(step)
    if isinstance(outcome, Completed):
        save_artifacts(ctx, run)
    return outcome


def precompute(ctx: JobContext, run: MLXRun) -> list[Any] | None:
    """The job's precompute_ref_log_probs: the reference logps of every training batch, before the first step
    (again on a resume: the reference is the base model, so they come out the same). Logged before and after,
    since a large dataset makes this pass minutes long with no step to show; None if stopped during it."""
    from ktoforge_mlx.trainer import precompute_references

    started = time.monotonic()
    ctx.log("computing the reference log-probs of every training batch", batches=run.plan.num_batches)
    references = precompute_references(run.loaded.model, run.get_batch, run.kto, run.plan.num_batches,
                                       should_stop=ctx.should_stop)
    if references is not None:
        ctx.log("reference log-probs computed", seconds=round(time.monotonic() - started, 1))
    return references


def save_artifacts(ctx: JobContext, run: MLXRun) -> None:
    """The mlx-lm adapter (as a tar), the same adapter in PEFT's format, and the tokenizer files."""
    from ktoforge_mlx.convert import to_peft
    from ktoforge_mlx.lora import save_adapter

    mlx_dir = ctx.checkpoint_dir / "mlx_adapter"
    save_adapter(run.loaded.model, run.lora, mlx_dir)
    with tarfile.open(ctx.output_dir / "mlx_adapter.tar", "w") as tar:
        for name in ("adapters.safetensors", "adapter_config.json"):
            tar.add(mlx_dir / name, arcname=name)
    source = run.loaded.source
    to_peft(mlx_dir, ctx.output_dir, source.ref if source.kind == "builtin" else source.name)
    run.loaded.tokenizer.save_pretrained(str(ctx.output_dir))


BACKEND = TrainingBackend("mlx", load_model, prepare, run_loop)


def train(ctx: JobContext) -> Outcome:
    """The whole run of a job on this backend, chores included: what run_job and the tests call."""
    return run_backend(BACKEND, ctx)

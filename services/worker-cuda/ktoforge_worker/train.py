"""KTO training with TRL's KTOTrainer and a LoRA adapter: the torch backend's train function.

Configured only through KTOConfig and callbacks (no TRL internals overridden). Runs on CUDA with Unsloth
(4-bit) where available, on CPU with transformers + peft otherwise (unless KTOFORGE_REQUIRE_GPU forbids it).
``dataset_num_proc=None``: TRL tokenizes in this process; Unsloth keeps that (see loading.import_unsloth_first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ktoforge.lifecycle import JobContext
from ktoforge.models import check_hub_access, check_model, resolve
from ktoforge_worker.gpu import require_gpu
from ktoforge_worker.loading import check_precision, import_unsloth_first, load, tokenizer_files


def kto_config(ctx: JobContext, weights: dict[str, float], has_eval: bool) -> Any:
    """The job's hyperparameters as TRL's KTOConfig (same names), plus what this machine needs."""
    import torch
    from trl import KTOConfig

    hp = ctx.job.hyperparameters
    cuda = torch.cuda.is_available()
    return KTOConfig(
        output_dir=str(ctx.checkpoint_dir), beta=hp.beta, loss_type=hp.loss_type, max_length=hp.max_length,
        learning_rate=hp.learning_rate, lr_scheduler_type=hp.lr_scheduler_type, warmup_steps=hp.warmup_ratio,
        per_device_train_batch_size=hp.per_device_train_batch_size,
        per_device_eval_batch_size=hp.per_device_train_batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps, num_train_epochs=hp.num_train_epochs,
        max_steps=hp.max_steps, seed=hp.seed, save_strategy="steps", save_steps=hp.save_steps, save_total_limit=2,
        logging_steps=hp.logging_steps, eval_strategy="steps" if has_eval else "no", eval_steps=hp.save_steps,
        gradient_checkpointing=hp.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=not cuda, report_to=[], optim=hp.optim,
        dataloader_num_workers=0, dataset_num_proc=None, remove_unused_columns=False, **weights,
    )


def last_checkpoint(folder: Path) -> Path | None:
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def build_trainer(ctx: JobContext) -> tuple[Any, Any, dict[str, Any]]:
    """(trainer, tokenizer, resolved config): everything up to trainer.train().

    In this order: what fails fast and downloads nothing (no GPU where one is required, a hub model this
    worker cannot get), then Unsloth where it will be used, and only then trl, transformers, peft, datasets.
    """
    settings, job = ctx.settings, ctx.job
    require_gpu(settings)
    import torch  # torch may come before Unsloth; trl, transformers and peft may not

    check_precision(job.hyperparameters, torch.cuda.is_available())
    if check_model(job.model, settings) == "hub":
        check_hub_access(job.model, settings.hf_token.get_secret_value() or None, settings)
    model_ref = resolve(job.model, settings.model_cache_dir, settings)
    use_unsloth = import_unsloth_first(settings)
    from trl import KTOTrainer  # after Unsloth: its patched class where Unsloth is used

    from ktoforge_worker.callbacks import JobCallback
    from ktoforge_worker.data import prepare

    model, tokenizer, peft_config = load(model_ref, job, settings, use_unsloth)
    train_ds, eval_ds, weights = prepare(ctx.dataset_path, tokenizer_files(model_ref, settings), job.hyperparameters)
    args = kto_config(ctx, weights, eval_ds is not None)
    trainer = KTOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[JobCallback(ctx, ctx.output_dir / "metrics.jsonl")])
    resolved = {"job": job.model_dump(mode="json"), "model_path": model_ref, "rows": {"train": len(train_ds),
                "eval": len(eval_ds) if eval_ds is not None else 0}, "resolved_weights": weights,
                "kto_config": json.loads(args.to_json_string())}
    return trainer, tokenizer, resolved


def train(ctx: JobContext) -> None:
    trainer, tokenizer, resolved = build_trainer(ctx)
    resume = last_checkpoint(ctx.checkpoint_dir)
    if resume is not None:
        ctx.log("resuming from checkpoint", resumed_from_step=int(resume.name.split("-")[1]))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if ctx.should_stop():
        return
    trainer.model.save_pretrained(ctx.output_dir, selected_adapters=["default"])
    tokenizer.save_pretrained(ctx.output_dir)
    (ctx.output_dir / "job_config.json").write_text(json.dumps(resolved, indent=2, default=str))

"""KTO training with TRL's KTOTrainer and a LoRA adapter: the torch backend (``BACKEND``) of the lifecycle.

Configured only through KTOConfig and callbacks (no TRL internals overridden). Runs on CUDA with Unsloth
(4-bit) where available, on CPU with transformers + peft otherwise (unless KTOFORGE_REQUIRE_GPU forbids it).
``dataset_num_proc=None``: TRL tokenizes in this process; Unsloth keeps that (see loading.import_unsloth_first).
The model arrives resolved (hub access and token checked) and checkpoints, metrics.jsonl and job_config.json
are the lifecycle's: this module only loads, builds the trainer and trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ktoforge.backend import Completed, Outcome, Prepared, TrainingBackend
from ktoforge.lifecycle import JobContext, run_backend
from ktoforge.models import ModelSource, model_source
from ktoforge_worker.gpu import require_gpu
from ktoforge_worker.loading import TOKENIZER_FILES, check_precision, import_unsloth_first, load, restore_lora_dropout


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
        max_steps=hp.max_steps, seed=hp.seed, save_strategy="steps", save_steps=hp.save_steps,
        logging_steps=hp.logging_steps, eval_strategy="steps" if has_eval else "no", eval_steps=hp.save_steps,
        gradient_checkpointing=hp.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=not cuda, report_to=[], optim=hp.optim,
        dataloader_num_workers=0, dataset_num_proc=None, remove_unused_columns=False,
        precompute_ref_log_probs=hp.precompute_ref_log_probs, **weights,
    )


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    peft_config: Any  # for TRL to apply; None when Unsloth already made the PEFT model
    source: ModelSource


def load_model(ctx: JobContext, source: ModelSource) -> Loaded:
    """The base model and tokenizer. In this order: what fails fast and loads nothing (no GPU where one is
    required, a precision this machine cannot give), then Unsloth where it will be used, and only then trl,
    transformers, peft, datasets."""
    settings, job = ctx.settings, ctx.job
    require_gpu(settings)
    import torch  # torch may come before Unsloth; trl, transformers and peft may not

    check_precision(job.hyperparameters, torch.cuda.is_available())
    use_unsloth = import_unsloth_first(settings)
    model, tokenizer, peft_config = load(source.ref, job, settings, use_unsloth)
    return Loaded(model, tokenizer, peft_config, source)


def prepare(ctx: JobContext, loaded: Loaded) -> Prepared:
    """TRL's datasets and the KTOTrainer (state: (trainer, tokenizer)): everything up to trainer.train()."""
    from transformers import set_seed
    from trl import KTOTrainer  # after Unsloth (load_model): its patched class where Unsloth is used

    from ktoforge_worker.callbacks import JobCallback
    from ktoforge_worker.data import prepare as to_datasets

    hp = ctx.job.hyperparameters
    train_ds, eval_ds, weights = to_datasets(ctx.dataset_path, loaded.source.local_dir(TOKENIZER_FILES), hp)
    args = kto_config(ctx, weights, eval_ds is not None)
    set_seed(hp.seed)  # PEFT initialises the LoRA weights in KTOTrainer.__init__, before the Trainer seeds
    trainer = KTOTrainer(model=loaded.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=loaded.tokenizer, peft_config=loaded.peft_config,
                         callbacks=[JobCallback(ctx)])
    restore_lora_dropout(trainer.model, ctx.job.lora.lora_dropout)
    rows = {"train": len(train_ds), "eval": len(eval_ds) if eval_ds is not None else 0}
    return Prepared((trainer, loaded.tokenizer), rows, weights, {"kto_config": json.loads(args.to_json_string())})


def run_trainer(ctx: JobContext, prepared: Prepared) -> Outcome:
    """trainer.train(), from the job's latest checkpoint if it has one; the adapter saved when it completed."""
    trainer, tokenizer = prepared.state
    resume = ctx.latest_checkpoint()
    if resume is not None:
        ctx.log("resuming from checkpoint", resumed_from_step=resume[0])
    trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    outcome = ctx.outcome(trainer.state.global_step)
    if isinstance(outcome, Completed):
        trainer.model.save_pretrained(ctx.output_dir, selected_adapters=["default"])
        tokenizer.save_pretrained(ctx.output_dir)
    return outcome


BACKEND = TrainingBackend("cuda", load_model, prepare, run_trainer)


def train(ctx: JobContext) -> Outcome:
    """The whole run of a job on this backend, chores included: what run_job and the tests call."""
    return run_backend(BACKEND, ctx)


def build_trainer(ctx: JobContext) -> tuple[Any, Any, Prepared]:
    """(trainer, tokenizer, Prepared) for tests and benchmarks that drive the trainer themselves."""
    prepared = prepare(ctx, load_model(ctx, model_source(ctx.job.model, ctx.settings)))
    trainer, tokenizer = prepared.state
    return trainer, tokenizer, prepared

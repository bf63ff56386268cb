"""A TRL KTOTrainer and an MLX model holding the same tiny Mistral weights and the same LoRA initialisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx.core")

ROWS = 8
BATCH = 4
MAX_LENGTH = 128
LORA = {"r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0}


@dataclass
class Pair:
    trainer: Any  # trl.KTOTrainer on a PEFT model
    mlx_model: Any
    mlx_rows: list  # ktoforge_mlx.data.Row, built by our pipeline from the same examples
    lora_params: dict


def texts(dataset: Path, model_dir: Path) -> tuple[list, Any]:
    """The first ROWS examples, and the TRL dataset the torch worker builds from them."""
    from ktoforge.dataset import ChatTemplate, load_examples
    from ktoforge_worker.data import to_dataset

    examples = load_examples(dataset)[:ROWS]
    return examples, to_dataset(examples, ChatTemplate.from_dir(model_dir))


def copy_lora(peft_model: Any, mlx_model: Any) -> None:
    """PEFT's A (r×in) and B (out×r) into mlx-lm's lora_a (in×r) and lora_b (r×out)."""
    import mlx.core as mx

    mlx_modules = dict(mlx_model.named_modules())
    copied = 0
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name.removeprefix("base_model.model.")
            target = mlx_modules[key]
            target.lora_a = mx.array(module.lora_A["default"].weight.detach().numpy().T.copy())
            target.lora_b = mx.array(module.lora_B["default"].weight.detach().numpy().T.copy())
            copied += 1
    assert copied == 14  # 7 targets × 2 blocks


def make_pair(dataset: Path, model_dir: Path, out: Path, loss_type: str = "kto", warm_steps: int = 0,
              **kto_kwargs: Any) -> Pair:
    """``warm_steps`` of TRL training first (lr 1e-2) move the policy where the KL estimate is positive: after 5,
    the first batch's KL was 15.8-18.3 over five draws of lora_A. At lr 5e-2 it was 0 (clamped) to 12.6, so
    test_first_batch_equals_trl failed in about one run in three while lora_A was drawn unseeded.
    ``kto_kwargs`` are KTOConfig's, over the defaults below; our rows follow its batch size and max_length."""
    import mlx_lm
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    from ktoforge.schemas import LORA_TARGETS, LoraSettings
    from ktoforge_mlx.data import build_rows
    from ktoforge_mlx.lora import add_lora, lora_parameters

    examples, rows = texts(dataset, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = KTOConfig(**{"output_dir": str(out), "bf16": False, "use_cpu": True, "report_to": [],
                        "per_device_train_batch_size": BATCH, "max_length": MAX_LENGTH, "loss_type": loss_type,
                        "gradient_checkpointing": False, "lr_scheduler_type": "constant", "logging_steps": 1,
                        "save_strategy": "no", "seed": 0, **kto_kwargs})
    torch.manual_seed(0)  # PEFT draws lora_A inside KTOTrainer.__init__, before the Trainer seeds: as in a job
    trainer = KTOTrainer(model=base, args=args, train_dataset=rows, processing_class=tokenizer,
                         peft_config=LoraConfig(target_modules=list(LORA_TARGETS), **LORA))
    torch.manual_seed(1)
    with torch.no_grad():  # B ≠ 0 so that policy ≠ reference from the first step
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    if warm_steps:
        trainer.args.max_steps, trainer.args.learning_rate = warm_steps, 1e-2
        trainer.train()

    mlx_model, mlx_tok = mlx_lm.load(str(model_dir))
    params = lora_parameters(mlx_model, LoraSettings(target_modules=list(LORA_TARGETS), **LORA))
    add_lora(mlx_model, params)
    copy_lora(trainer.model, mlx_model)
    from ktoforge.dataset import ChatTemplate

    encode = lambda text: mlx_tok.encode(text, add_special_tokens=False)  # noqa: E731
    mlx_rows = build_rows(examples, ChatTemplate.from_dir(model_dir), encode, args.max_length,
                          args.per_device_train_batch_size,
                          with_kl=loss_type != "apo_zero_unpaired")
    return Pair(trainer, mlx_model, mlx_rows, params)


@pytest.fixture()
def pair_factory(reference_dataset: Path, tiny_model_dir: Path, tmp_path: Path):
    return lambda **kw: make_pair(reference_dataset, tiny_model_dir, tmp_path / "trl", **kw)


def subset(reference: Path, dest: Path, n: int) -> Path:
    """The first n desirable and n undesirable rows of the reference file."""
    pos, neg = [], []
    for line in reference.read_text().splitlines():
        (pos if '"label": true' in line else neg).append(line)
    dest.write_text("\n".join(pos[:n] + neg[:n]) + "\n")
    return dest


JOB_HP = {"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
          "save_steps": 100, "learning_rate": 1e-2, "gradient_checkpointing": True, "lr_scheduler_type": "constant"}


@pytest.fixture()
def make_job(kf_env, redis_client, reference_dataset, tmp_path):
    """make_job(name, **hyper) -> (store, job id, dataset path, job root): a running mlx job in the real store."""
    from ktoforge.jobs import JobStore
    from ktoforge.schemas import JobCreate, JobStatus, LoraSettings

    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    dataset = subset(reference_dataset, tmp_path / "d.jsonl", 4)

    def make(name: str, **hyper: Any) -> tuple[Any, str, Path, Path]:
        job, _ = store.create(JobCreate(dataset_id="0" * 64, backend="mlx", hyperparameters={**JOB_HP, **hyper},
                                        lora=LoraSettings(r=4, lora_alpha=8)))
        store.transition(job.id, JobStatus.running)
        root = tmp_path / name
        (root / "output").mkdir(parents=True)
        (root / "checkpoints").mkdir(parents=True)
        return store, job.id, dataset, root

    return make


def context(store: Any, job_id: str, dataset: Path, root: Path) -> Any:
    from ktoforge.lifecycle import JobContext
    from ktoforge.settings import get_settings

    return JobContext(store.get(job_id), store, get_settings(), dataset, root / "output", root / "checkpoints")

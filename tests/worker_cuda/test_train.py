"""The torch backend trains for real with TRL's KTOTrainer on builtin:tiny-mistral."""

from __future__ import annotations

import json

import pytest
import torch

from ktoforge_worker.train import build_trainer, train

TRL_METRICS = {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
               "logps/rejected", "grad_norm", "learning_rate", "epoch"}


def test_train_writes_a_peft_adapter_that_changes_logits(make_ctx, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ctx = make_ctx()
    train(ctx)
    files = {p.name for p in ctx.output_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.jsonl",
            "job_config.json"} <= files
    resolved = json.loads((ctx.output_dir / "job_config.json").read_text())
    assert resolved["resolved_weights"] == {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert (resolved["backend"], resolved["rows"], resolved["cuda"]["kto_config"]["max_steps"]) == (
        "cuda", {"train": 16, "eval": 0}, 3)
    metrics = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "metrics" and "loss" in e.data]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert TRL_METRICS <= set(metrics[0]) and metrics[-1]["max_steps"] == 3
    assert sorted(p.name for p in ctx.checkpoint_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 3, 100, 200, 300, 4]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        after = PeftModel.from_pretrained(base, ctx.output_dir)(ids).logits
    assert (after - before).abs().max().item() > 1e-4


def test_training_text_is_the_chat_template(make_ctx, tiny_model_dir):
    from transformers import AutoTokenizer

    from ktoforge.dataset import load_examples
    from ktoforge.dataset.render import merge_system
    from ktoforge.dataset.split import shuffle

    ctx = make_ctx(max_length=32768)
    trainer, _, _ = build_trainer(ctx)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = shuffle(load_examples(ctx.dataset_path), ctx.job.hyperparameters.seed)
    assert len(trainer.train_dataset) == len(examples) == 16
    for row, ex in zip(trainer.train_dataset, examples, strict=True):
        text = tok.apply_chat_template(merge_system(ex.prompt) + [ex.completion], tokenize=False)
        assert row["prompt_ids"] + row["completion_ids"] == tok(text, add_special_tokens=False)["input_ids"]
        assert row["label"] == ex.label


def test_cancel_flag_stops_within_a_step(make_ctx):
    ctx = make_ctx(max_steps=50)
    ctx.store.request_cancel(ctx.job.id)  # the job is running: this sets the flag the callback checks
    train(ctx)
    steps = [e.data["step"] for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "metrics"]
    assert max(steps) == 1
    assert not (ctx.output_dir / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_resume_continues_from_last_checkpoint(make_ctx, loss_type):
    ctx = make_ctx(max_steps=2, save_steps=2, loss_type=loss_type)
    train(ctx)
    hp = ctx.job.hyperparameters.model_copy(update={"max_steps": 4})
    ctx.job = ctx.job.model_copy(update={"hyperparameters": hp})
    train(ctx)  # a second delivery of the same job: continues from checkpoint-2
    logs = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "log"]
    saved = {"message": "checkpoint saved", "uploaded": False}  # no API in this context: kept on disk only
    assert logs == [{**saved, "step": 2}, {"message": "resuming from checkpoint", "resumed_from_step": 2},
                    {**saved, "step": 4}]
    metrics = [e.data for e in ctx.store.events(ctx.job.id, None, 100) if e.type == "metrics"]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2, 3, 4]


def test_auto_weights_balance_an_unbalanced_dataset(make_ctx):
    ctx = make_ctx(n_rows=12, n_undesirable=4)  # 3:1 desirable
    trainer, _, prepared = build_trainer(ctx)
    w_d, w_u = trainer.args.desirable_weight, trainer.args.undesirable_weight
    assert prepared.weights == {"desirable_weight": w_d, "undesirable_weight": w_u}
    assert 1 <= w_d * 12 / (w_u * 4) <= 4 / 3
    assert prepared.config["kto_config"]["undesirable_weight"] == w_u


@pytest.mark.parametrize("field, value", [("quantization", "nf4"), ("quantization", "int8"), ("optim", "adamw_8bit")])
def test_a_cuda_only_precision_on_a_cpu_worker_fails_before_loading(make_ctx, field, value):
    """No quiet fp32 / 32-bit AdamW stand-in for what the job was planned with: it fails, saying why."""
    ctx = make_ctx(**{field: value})
    with pytest.raises(ValueError, match=f"{field}={value} needs a CUDA GPU"):
        build_trainer(ctx)


def test_bf16_weights_train_on_the_cpu(make_ctx):
    ctx = make_ctx(quantization="bf16", max_steps=1)
    trainer, _, _ = build_trainer(ctx)
    assert {p.dtype for n, p in trainer.model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    trainer.train()
    assert trainer.state.global_step == 1


def logged_values(ctx) -> list[dict]:
    """metrics.jsonl without what measures time (eta_s, train_runtime, eval_samples_per_second, ...)."""
    rows = [json.loads(line) for line in (ctx.output_dir / "metrics.jsonl").read_text().splitlines()]
    timing = lambda key: key == "eta_s" or key.endswith(("_runtime", "_per_second"))  # noqa: E731
    return [{k: v for k, v in row.items() if not timing(k)} for row in rows]


def test_two_jobs_with_the_same_seed_report_identical_metrics(make_ctx, tmp_path):
    """LoRA's initialisation included (PEFT makes it inside KTOTrainer.__init__, before the Trainer seeds), and
    with the job's default lora_dropout of 0.05 active."""
    first = make_ctx(max_steps=3, eval_fraction=0.25)
    train(first)
    (tmp_path / "job").rename(tmp_path / "first")  # make_ctx's next job gets the same folder names
    first.output_dir = tmp_path / "first" / "output"
    second = make_ctx(max_steps=3, eval_fraction=0.25)
    train(second)
    ours, again = logged_values(first), logged_values(second)
    assert [m["step"] for m in ours] == [1, 2, 2, 3, 3, 3]  # 3 logs, evals at save_steps=2 and the end, summary
    assert ours == again


def test_lora_dropout_is_the_jobs_and_every_other_dropout_is_off(make_ctx):
    ctx = make_ctx(lora={"lora_dropout": 0.1}, max_steps=1)
    trainer, _, _ = build_trainer(ctx)
    lora = {n: m.p for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n}
    others = {n: m.p for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout) and n not in lora}
    assert len(lora) == 14 and set(lora.values()) == {0.1}  # 7 projections x 2 blocks
    assert set(others.values()) <= {0.0}
    trainer.train()  # and it trains with it
    assert trainer.state.global_step == 1


@pytest.mark.parametrize("max_steps, evaluated", [(3, [2, 3]), (4, [2, 4])])  # 4: not evaluated twice
def test_eval_runs_every_save_steps_and_once_at_the_end(make_ctx, max_steps, evaluated):
    ctx = make_ctx(max_steps=max_steps, save_steps=2, eval_fraction=0.25)
    train(ctx)
    assert [m["step"] for m in ctx.store.iter_metrics(ctx.job.id) if "eval_loss" in m] == evaluated

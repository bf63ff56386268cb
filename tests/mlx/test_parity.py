"""Our MLX KTO against TRL's own KTOTrainer: same weights, same LoRA, same batch → same numbers, and the same logs
under the settings jobs use (cosine with warmup, a partial accumulation window, logging_steps > 1, truncation)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.mlx.conftest import BATCH, MAX_LENGTH

pytest.importorskip("trl")

# TRL's per-batch metrics that both compute from logits and log-probabilities (relative tolerance: float32 rounding).
LOGGED = ("kl", "entropy", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "logits/chosen",
          "logits/rejected")


def trl_first_batch(trainer):
    """One batch from TRL's dataloader, its loss (with grads on the LoRA weights) and the metrics it logs."""
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    grads = {n.removeprefix("base_model.model."): p.grad.detach().numpy() for n, p in trainer.model.named_parameters()
             if p.requires_grad}
    return batch, loss.item(), metrics, grads


def mlx_grad_of(grads_tree, peft_name: str) -> np.ndarray:
    """PEFT's '...q_proj.lora_A.default.weight' gradient from ours, transposed to PEFT's layout."""
    from mlx.utils import tree_flatten

    flat = dict(tree_flatten(grads_tree))
    module, rest = peft_name.split(".lora_")
    leaf = "lora_a" if rest.startswith("A") else "lora_b"
    return np.array(flat[f"{module}.{leaf}"]).T


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_first_batch_equals_trl(pair_factory, loss_type: str) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    from ktoforge_mlx.data import collate
    from ktoforge_mlx.kto import KTOSettings, batch_metrics, kto_loss

    pair = pair_factory(loss_type=loss_type, warm_steps=5, desirable_weight=1.0, undesirable_weight=1.5, beta=0.3)
    batch, trl_loss, trl_metrics, trl_grads = trl_first_batch(pair.trainer)

    ours = collate(pair.mlx_rows[:BATCH], pad_id=0, max_length=MAX_LENGTH)
    # The same token ids: our tokenization of the shared rendering is TRL's.
    mask = batch["attention_mask"].numpy().astype(bool)
    assert np.array_equal(np.array(ours["input_ids"])[mask[:, : ours["input_ids"].shape[1]]],
                          batch["input_ids"].numpy()[mask])
    assert np.array_equal(np.array(ours["completion_mask"]), batch["completion_mask"].numpy()[:, : ours["completion_mask"].shape[1]])
    if loss_type == "kto":
        assert np.array_equal(np.array(ours["KL_completion_mask"]),
                              batch["KL_completion_mask"].numpy()[:, : ours["KL_completion_mask"].shape[1]])

    cfg = KTOSettings(beta=0.3, desirable_weight=1.0, undesirable_weight=1.5, loss_type=loss_type)
    pair.mlx_model.train()
    (loss, aux), grads = nn.value_and_grad(pair.mlx_model, lambda m, b: kto_loss(m, b, cfg))(pair.mlx_model, ours)
    mx.eval(loss, aux, grads)
    metrics = batch_metrics(loss.item(), {k: v.item() for k, v in aux.items()})

    assert abs(metrics["loss"] - trl_loss) <= 1e-4
    assert set(trl_metrics) - {"num_tokens"} == set(metrics) - {"loss"}  # TRL's names, loss apart (transformers')
    for key in LOGGED:
        assert abs(metrics[key] - trl_metrics[key]) <= 1e-4 * max(1.0, abs(trl_metrics[key])), key
    # the difference of two values each within 1e-4
    assert abs(metrics["rewards/margins"] - trl_metrics["rewards/margins"]) <= 2e-4
    if loss_type == "kto":
        assert trl_metrics["kl"] > 0  # B ≠ 0: the KL term is really exercised, not clamped to 0
    assert len(trl_grads) == 28
    for name, g in trl_grads.items():
        np.testing.assert_allclose(mlx_grad_of(grads, name), g, atol=1e-4, rtol=1e-3, err_msg=name)
    assert max(np.abs(g).max() for g in trl_grads.values()) > 1e-3  # gradients are not trivially zero


@pytest.mark.parametrize("precompute", [False, True], ids=["reference_each_step", "precomputed_reference"])
def test_ten_adam_steps_equal_trl(pair_factory, precompute: bool) -> None:
    """TRL's trainer.train() and ours, 10 AdamW steps with accumulation and clipping: same LoRA weights; also
    with precompute_ref_log_probs (TRL's pass before training against ours, precompute_references)."""
    from ktoforge_mlx.data import batches, collate
    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.trainer import Plan, make_optimizer, precompute_references, train

    pair = pair_factory(max_steps=10, learning_rate=1e-2, gradient_accumulation_steps=2, beta=0.1,
                        precompute_ref_log_probs=precompute)
    pair.trainer.train()
    trl_logs = [h for h in pair.trainer.state.log_history if "kl" in h]

    chunks = [collate(b, pad_id=0, max_length=MAX_LENGTH) for b in batches(pair.mlx_rows, BATCH)]
    plan = Plan.of(len(chunks), 2, epochs=1.0, max_steps=10, learning_rate=1e-2, lr_scheduler_type="constant")
    cfg = KTOSettings(beta=0.1)
    references = precompute_references(pair.mlx_model, chunks.__getitem__, cfg, len(chunks)) if precompute else None
    logs: list[dict] = []
    steps = train(pair.mlx_model, make_optimizer(plan), chunks.__getitem__, cfg, plan, logs.append,
                  references=references)

    assert steps == 10 and len(logs) == len(trl_logs) == 10
    for ours, theirs in zip(logs, trl_logs):
        assert_log_equal(ours, theirs)
    assert_same_lora(pair)
    assert logs[-1]["kl"] >= 0


def assert_log_equal(ours: dict, theirs: dict, prefix: str = "") -> None:
    """One log of ours against TRL's: its names (ours may add some), its values within float32 rounding, and
    transformers' step, epoch and learning rate exactly."""
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    for key in (*LOGGED, "loss", "grad_norm"):
        if f"{prefix}{key}" in theirs:
            mine, trl = ours[f"{prefix}{key}"], theirs[f"{prefix}{key}"]
            assert abs(mine - trl) <= 1e-3 * max(1.0, abs(trl)), (prefix + key, ours, theirs)
    for key in ("step", "epoch", "learning_rate", f"{prefix}num_tokens"):
        if key in theirs:
            assert ours[key] == theirs[key], (key, ours, theirs)


def assert_same_lora(pair) -> None:
    """After training, our LoRA weights are TRL's (and they moved)."""
    from mlx.utils import tree_flatten

    flat = dict(tree_flatten(pair.mlx_model.trainable_parameters()))
    moved = 0.0
    for name, p in pair.trainer.model.named_parameters():
        if p.requires_grad:
            module, rest = name.removeprefix("base_model.model.").split(".lora_")
            ours = np.array(flat[f"{module}.lora_{rest[0].lower()}"]).T
            np.testing.assert_allclose(ours, p.detach().numpy(), atol=1e-3, err_msg=name)
            moved = max(moved, float(np.abs(ours).max()))
    assert moved > 0


# The job's defaults where they matter (cosine, 10 % warmup, accumulation over a partial last window) and
# logging_steps > 1: 7 rows (the 8th's prompt fills max_length) in batches of 2 are 4 batches an epoch, so
# accumulating 3 makes windows of 3 and 1 batches; max_length 48 truncates every row that is left.
JOB_DEFAULTS = {"lr_scheduler_type": "cosine", "warmup_steps": 0.1, "gradient_accumulation_steps": 3,
                "logging_steps": 3, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
                "max_length": 48, "max_steps": 10, "learning_rate": 1e-2, "beta": 0.1}


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_job_defaults_equal_trl(pair_factory, loss_type: str) -> None:
    """Every log TRL writes in 10 steps (steps 3, 6 and 9), and its evaluation at the end, equal ours: epoch
    counted in micro-batches (1.75 at step 3, not 1.5), loss as the mean of per-step means, learning rates."""
    from ktoforge_mlx.data import batches, collate
    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.trainer import Plan, make_optimizer, train

    pair = pair_factory(loss_type=loss_type, **JOB_DEFAULTS)
    length = JOB_DEFAULTS["max_length"]
    assert len(pair.mlx_rows) == len(pair.trainer.train_dataset) == 7
    assert all(len(r.prompt_ids) + len(r.completion_ids) > length for r in pair.mlx_rows)  # all truncated
    pair.trainer.train()
    pair.trainer.evaluate(eval_dataset=pair.trainer.train_dataset)
    trl_logs = [h for h in pair.trainer.state.log_history if "loss" in h and "train_loss" not in h]
    trl_eval = pair.trainer.state.log_history[-1]

    chunks = [collate(b, pad_id=0, max_length=length) for b in batches(pair.mlx_rows, 2)]
    plan = Plan.of(len(chunks), 3, epochs=1.0, max_steps=10, learning_rate=1e-2, lr_scheduler_type="cosine",
                   warmup_ratio=0.1, logging_steps=3, save_steps=100)
    logs: list[dict] = []
    train(pair.mlx_model, make_optimizer(plan), chunks.__getitem__, KTOSettings(beta=0.1, loss_type=loss_type),
          plan, logs.append, eval_batches=chunks)

    assert [h["step"] for h in trl_logs] == [3, 6, 9] and trl_logs[0]["epoch"] == 1.75
    train_logs = [m for m in logs if "loss" in m]
    assert [m["step"] for m in train_logs] == [3, 6, 9, 10]  # ours logs the last step too
    for ours, theirs in zip(train_logs, trl_logs):
        assert_log_equal(ours, theirs)
    assert_log_equal(logs[-1], trl_eval, prefix="eval_")
    assert "eval_loss" in trl_eval and logs[-1]["step"] == 10
    assert_same_lora(pair)

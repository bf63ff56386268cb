"""One batch's KTO loss, recomputed by hand from the tokenized rows, equals what TRL computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ktoforge_worker.train import build_trainer


def completion_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """Sum of log p(completion token | everything before it), on the unpadded sequence."""
    ids = torch.tensor([prompt_ids + completion_ids])
    logps = torch.log_softmax(model(ids).logits[0, :-1], -1)
    targets = ids[0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1:].sum()


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_one_batch_loss_matches_the_kto_formula(make_ctx, loss_type):
    beta, w_d, w_u, n = 0.5, 1.3, 0.7, 4
    ctx = make_ctx(max_length=32768, per_device_train_batch_size=n, beta=beta, loss_type=loss_type,
                   desirable_weight=w_d, undesirable_weight=w_u, lora={"lora_dropout": 0.0}, seed=1)
    # seed=1: the job seeds the LoRA A init (KTOTrainer draws it); this one gives a KL term the batch keeps
    trainer, _, _ = build_trainer(ctx)
    model = trainer.model
    assert "ref" not in model.peft_config  # TRL made the PEFT model itself: the reference is the adapter-less base
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # policy != reference from the first step
    model.double()  # both computations in float64: the comparison tests the formula, not float32 rounding

    rows = [trainer.train_dataset[i] for i in range(n)]  # the sequential sampler's first batch
    labels = torch.tensor([r["label"] for r in rows])
    assert 0 < labels.sum() < n
    model.train()  # as in a training step (dropout is 0, so the hand computation sees the same model)
    with torch.no_grad():
        policy = torch.stack([completion_logp(model, r["prompt_ids"], r["completion_ids"]) for r in rows])
        # KL pairs: each prompt with the previous row's completion, rotating within the batch
        kl_pairs = [(rows[i]["prompt_ids"], rows[i - 1]["completion_ids"]) for i in range(n)]
        kl_policy = torch.stack([completion_logp(model, p, c) for p, c in kl_pairs])
        with model.disable_adapter():
            ref = torch.stack([completion_logp(model, r["prompt_ids"], r["completion_ids"]) for r in rows])
            kl_ref = torch.stack([completion_logp(model, p, c) for p, c in kl_pairs])
    assert (policy - ref).abs().min() > 1e-3
    kl = (kl_policy - kl_ref).mean().clamp(min=0)
    assert kl > 0.1  # the KL term is not clamped away: it matters in this batch
    ratio = policy - ref
    if loss_type == "kto":
        losses = torch.where(labels, w_d * (1 - F.sigmoid(beta * (ratio - kl))),
                             w_u * (1 - F.sigmoid(beta * (kl - ratio))))
    else:
        losses = torch.where(labels, w_d * (1 - F.sigmoid(beta * ratio)), w_u * F.sigmoid(beta * ratio))
    expected = losses.mean()

    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["label"].tolist() == labels.tolist()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch)
    assert trl_loss.item() == pytest.approx(expected.item(), abs=1e-5)
    logged_kl = kl.item() if loss_type == "kto" else 0.0  # APO-zero needs no KL term; TRL logs 0
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(logged_kl, abs=1e-5)

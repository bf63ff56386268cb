"""The KTO objective in MLX, computed exactly as TRL 1.14.2's ``KTOTrainer._compute_loss`` does.

Policy = base + mlx-lm LoRA layers; reference = the same model with each LoRA layer's base linear swapped
in (the adapter not computed) under ``stop_gradient``: no second copy of the weights, which is what lets a
7B model train in 24 GB. The KL estimate, the loss variants and the per-batch metrics follow TRL line by line so that a
job gives the same numbers on the Mac as on the CUDA worker (tests/mlx/test_parity.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

Batch = dict[str, mx.array]


@dataclass(frozen=True)
class KTOSettings:
    """The loss settings, with TRL's ``KTOConfig`` names."""

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"

    @property
    def calculate_kl(self) -> bool:
        return self.loss_type != "apo_zero_unpaired"


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "lora_a") and hasattr(m, "linear")]


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """The reference model: each LoRA layer's frozen base linear swapped in for the duration, so the
    adapter is not even computed (like PEFT's ``disable_adapter``); no weight is copied."""
    layers = lora_layers(model)
    try:
        model.update_modules(tree_unflatten([(name, layer.linear) for name, layer in layers]))
        yield
    finally:
        model.update_modules(tree_unflatten(layers))


def next_tokens(input_ids: mx.array) -> mx.array:
    """The token each position predicts (position t: token t+1; the last position's is masked out by
    ``predicting``). Shifting the targets, not the logits: ``logits[:, :-1]`` would copy the largest array of
    the step (batch x length x vocabulary, in float32), and its gradient would be another such array."""
    return mx.concatenate([input_ids[:, 1:], input_ids[:, -1:]], axis=1)


def predicting(completion_mask: mx.array) -> mx.array:
    """True where a position predicts a completion token (the next one is in the completion)."""
    return mx.concatenate([completion_mask[:, 1:], mx.zeros_like(completion_mask[:, :1])], axis=1) > 0


def completion_logps(logits: mx.array, input_ids: mx.array, completion_mask: mx.array) -> mx.array:
    """Sum over completion tokens of log p(token | prefix), per row (TRL's selective_log_softmax + sum).

    Rows are right-padded, so the causal mask alone keeps padding out of every real position.
    """
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, next_tokens(input_ids)[..., None], axis=-1).squeeze(-1)
    return mx.where(predicting(completion_mask), picked - mx.logsumexp(logits, axis=-1), 0.0).sum(-1)


def sequence_logps(model: nn.Module, input_ids: mx.array, completion_mask: mx.array) -> mx.array:
    """completion_logps of the model's forward (the passes whose logits serve nothing else)."""
    return completion_logps(model(input_ids), input_ids, completion_mask)


def logit_sums(logits: mx.array, completion_mask: mx.array, chosen: mx.array) -> dict[str, mx.array]:
    """What TRL's ``entropy`` and ``logits/*`` metrics are made of, over the completion tokens of the batch:
    the summed per-token entropy of the next-token distribution, and per class the summed per-token mean
    (over the vocabulary) of the logits, with their token counts. No gradient flows through any of it."""
    logits = mx.stop_gradient(logits.astype(mx.float32))
    mask = predicting(completion_mask).astype(mx.float32)
    lse = mx.logsumexp(logits, axis=-1, keepdims=True)
    entropy = lse.squeeze(-1) - (mx.exp(logits - lse) * logits).sum(-1)  # H = log Z - E_p[logit]
    row_logits, row_tokens = (logits.mean(-1) * mask).sum(-1), mask.sum(-1)
    return {"entropy_sum": (entropy * mask).sum(), "completion_tokens": row_tokens.sum(),
            "logits_chosen_sum": (row_logits * chosen).sum(), "chosen_tokens": (row_tokens * chosen).sum(),
            "logits_rejected_sum": (row_logits * (1 - chosen)).sum(),
            "rejected_tokens": (row_tokens * (1 - chosen)).sum()}


def _stacked(a: mx.array, b: mx.array) -> mx.array:
    """Two right-padded batches as one (zero-padded to the longer width): one forward instead of two."""
    width = max(a.shape[1], b.shape[1])
    pad = lambda x: mx.pad(x, [(0, 0), (0, width - x.shape[1])])  # noqa: E731
    return mx.concatenate([pad(a), pad(b)], axis=0)


def fixed_terms(model: nn.Module, batch: Batch, cfg: KTOSettings) -> dict[str, mx.array]:
    """What needs no gradient: reference logps of the batch and the clamped KL estimate.

    Computed outside the differentiated function so their graphs are freed before the backward pass.
    The reference sees the batch and the KL batch stacked in one forward.
    """
    n = batch["input_ids"].shape[0]
    if not cfg.calculate_kl:
        with lora_disabled(model):
            return {"ref_logps": sequence_logps(model, batch["input_ids"], batch["completion_mask"]),
                    "kl": mx.array(0.0)}
    with lora_disabled(model):
        ref = sequence_logps(model, _stacked(batch["input_ids"], batch["KL_input_ids"]),
                             _stacked(batch["completion_mask"], batch["KL_completion_mask"]))
    kl_policy = sequence_logps(model, batch["KL_input_ids"], batch["KL_completion_mask"])
    kl = mx.maximum(mx.mean(kl_policy - ref[n:]), 0.0)
    return {"ref_logps": ref[:n], "kl": kl}


def kto_loss(model: nn.Module, batch: Batch, cfg: KTOSettings,
             fixed: dict[str, mx.array] | None = None) -> tuple[mx.array, dict[str, mx.array]]:
    """Mean weighted KTO loss of one batch, and the sums TRL's metrics are made of.

    ``batch`` holds input_ids, completion_mask, label (bool) and, for ``kto``, KL_input_ids and
    KL_completion_mask: each completion paired with the previous row's prompt (TRL's +1 rotation).
    ``fixed`` is fixed_terms(model, batch, cfg), computed here when not given.
    """
    fixed = fixed_terms(model, batch, cfg) if fixed is None else fixed
    kl, ref_logps = mx.stop_gradient(fixed["kl"]), mx.stop_gradient(fixed["ref_logps"])
    labels = batch["label"]
    logits = model(batch["input_ids"])
    logps = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    logratios = logps - ref_logps
    if cfg.loss_type == "kto":
        chosen_losses = 1 - mx.sigmoid(cfg.beta * (logratios - kl))
        rejected_losses = 1 - mx.sigmoid(cfg.beta * (kl - logratios))
    else:
        chosen_losses = 1 - mx.sigmoid(cfg.beta * logratios)
        rejected_losses = mx.sigmoid(cfg.beta * logratios)
    losses = mx.where(labels, cfg.desirable_weight * chosen_losses, cfg.undesirable_weight * rejected_losses)
    rewards = cfg.beta * mx.stop_gradient(logratios)
    detached_logps = mx.stop_gradient(logps)
    chosen = labels.astype(mx.float32)
    aux = {
        "kl": kl,
        "num_chosen": chosen.sum(),
        "num_rejected": (1 - chosen).sum(),
        "rewards_chosen_sum": (rewards * chosen).sum(),
        "rewards_rejected_sum": (rewards * (1 - chosen)).sum(),
        "logps_chosen_sum": (detached_logps * chosen).sum(),
        "logps_rejected_sum": (detached_logps * (1 - chosen)).sum(),
        **logit_sums(logits, batch["completion_mask"], chosen),
    }
    return mx.mean(losses), aux


def batch_metrics(loss: float, aux: dict[str, float]) -> dict[str, float]:
    """One batch's metrics as TRL appends them: rewards/logps are per-class means and logits/* per-class token
    means, each absent for an empty class; entropy is the completion tokens' mean (0 without any)."""
    tokens = aux["completion_tokens"]
    out = {"loss": loss, "kl": aux["kl"], "entropy": aux["entropy_sum"] / tokens if tokens > 0 else 0.0}
    for cls in ("chosen", "rejected"):
        if aux[f"{cls}_tokens"] > 0:
            out[f"logits/{cls}"] = aux[f"logits_{cls}_sum"] / aux[f"{cls}_tokens"]
        if aux[f"num_{cls}"] > 0:
            out[f"rewards/{cls}"] = aux[f"rewards_{cls}_sum"] / aux[f"num_{cls}"]
            out[f"logps/{cls}"] = aux[f"logps_{cls}_sum"] / aux[f"num_{cls}"]
    if aux["num_chosen"] > 0 and aux["num_rejected"] > 0:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out


def average_metrics(per_batch: list[dict[str, float]]) -> dict[str, float]:
    """TRL's ``log``: each metric is the mean of the values appended since the last log."""
    keys = {k for m in per_batch for k in m}
    return {k: sum(vals) / len(vals) for k in sorted(keys) if (vals := [m[k] for m in per_batch if k in m])}

"""The KTO objective in MLX, computed exactly as TRL 1.14.2's ``KTOTrainer._compute_loss`` does.

Every quantity of the step (logps, KL, entropy, logits/*) reads the logits only at the positions that predict a
completion token, so the LM head and the log-softmax run there only (completion_logits): exact, cheaper, and,
for the mlx-lm architectures whose head splits off (split_head), no batch x length x vocabulary array is made.
On the CPU a gradient-free pass that runs alone (the reference precompute, evaluation) runs the sequence in chunks
through a KV cache (chunked_forward): MLX's CPU attention computes the masked half of every causal score matrix,
its Metal kernel skips it. The training step's own passes run unchunked on the CPU, on two streams at once
(ktoforge_mlx.trainer.CompiledStep says why).

Policy = base + mlx-lm LoRA layers; reference = the same model with each LoRA layer's base linear swapped
in (the adapter not computed) under ``stop_gradient``: no second copy of the weights, which is what lets a
7B model train in 24 GB. The KL estimate, the loss variants and the per-batch metrics follow TRL line by line so that a
job gives the same numbers on the Mac as on the CUDA worker (tests/mlx/test_parity.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_lm.models.cache import make_prompt_cache

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


POSITION_MULTIPLE = 32  # completion positions are gathered in lengths rounded up to this: few compiled shapes
HEAD_MODULES = frozenset({"mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3", "mlx_lm.models.phi3"})
Forward = Callable[[mx.array], mx.array]


def predicting(completion_mask: mx.array) -> mx.array:
    """True where a position predicts a completion token (the next one is in the completion)."""
    return mx.concatenate([completion_mask[:, 1:], mx.zeros_like(completion_mask[:, :1])], axis=1) > 0


def completion_positions(completion_mask: mx.array) -> mx.array:
    """(3, N) int32: row, column and validity (1, or 0 for padding) of each position that predicts a completion
    token, N the count rounded up to POSITION_MULTIPLE. Host-side (numpy), before the compiled step: the count
    depends on the data, and a compiled graph needs it as a shape. Padding entries point at (0, 0), are masked
    out of every sum, and repeat one shape for many batches so the step is traced a handful of times."""
    rows, cols = np.nonzero(np.array(predicting(completion_mask)))
    size = max(-(-len(rows) // POSITION_MULTIPLE), 1) * POSITION_MULTIPLE
    out = np.zeros((3, size), dtype=np.int32)
    out[0, :len(rows)], out[1, :len(rows)], out[2, :len(rows)] = rows, cols, 1
    return mx.array(out)


def with_positions(batch: Batch) -> Batch:
    """The batch with ``positions`` (and ``KL_positions``): completion_positions of its completion masks, computed
    here unless already there (the trainer adds them before its compiled step; eager callers get them here)."""
    out = dict(batch)
    for prefix in ("", "KL_"):
        if f"{prefix}completion_mask" in batch and f"{prefix}positions" not in batch:
            out[f"{prefix}positions"] = completion_positions(batch[f"{prefix}completion_mask"])
    return out


def split_head(model: nn.Module) -> tuple[Forward, Forward] | None:
    """(body, head) with model(x) == head(body(x)) for the mlx-lm architectures known to be exactly that (the
    final normed hidden states, then lm_head or the tied embedding): the head can then run on the completion
    positions only. None for any other architecture (logit scaling, soft-capping…): the full logits are used.
    Looked up at each call: lora_disabled swaps modules."""
    if type(model).__module__ not in HEAD_MODULES or not hasattr(model, "model"):
        return None
    tied = getattr(getattr(model, "args", None), "tie_word_embeddings", False) or not hasattr(model, "lm_head")
    return model.model, (model.model.embed_tokens.as_linear if tied else model.lm_head)


CPU_CHUNK = 32  # tokens a chunk of a gradient-free forward on the CPU: the bucketed widths' multiple, no ragged chunk


def computes_on_cpu() -> bool:
    """Whether MLX computes on the CPU (Linux's mlx[cpu]): what the CPU's own paths (chunks, two streams) key on."""
    return mx.default_device().type == mx.cpu


def gradient_free_chunk() -> int | None:
    """The chunk length of the gradient-free forwards: CPU_CHUNK when MLX computes on the CPU, None (one call) on
    the GPU, whose fused attention kernel already skips the key blocks a causal mask hides."""
    return CPU_CHUNK if computes_on_cpu() else None


def chunked_forward(forward: Callable[..., mx.array], model: nn.Module, input_ids: mx.array,
                    chunk: int | None) -> mx.array:
    """``forward(input_ids)`` (the model or its body), or the same computed ``chunk`` tokens at a time, each chunk
    attending to the cache of those before it (generation's chunked prefill, mlx-lm's own KV cache).

    Why: MLX's CPU attention makes the whole L x L score matrix and then masks its upper half (measured: causal
    costs what no mask costs, bench/profiles/mlx_forward.txt). In chunks of c, chunk j scores (j+1)c keys, not
    L: (n+1)/2n of the matrix for n chunks. Exact: each position sees the same keys at the same offsets (the
    cache's, for RoPE), and the layers outside attention act on each position alone. For gradient-free passes
    only: under gradient checkpointing the backward pass re-runs each block, which would fill the cache twice."""
    if chunk is None or input_ids.shape[1] <= chunk:
        return forward(input_ids)
    cache = make_prompt_cache(model)
    return mx.concatenate([forward(input_ids[:, start:start + chunk], cache=cache)
                           for start in range(0, input_ids.shape[1], chunk)], axis=1)


def completion_logits(model: nn.Module, input_ids: mx.array, positions: mx.array,
                      chunk: int | None = None) -> mx.array:
    """The float32 logits at ``positions`` only, (N, vocabulary): what every logp and metric of the step reads.

    logits[b, t] = W h[b, t] depends on position t's hidden state alone, so head(h[rows, cols]) equals
    model(x)[rows, cols] exactly while the head's matmul, its backward and every log-softmax run on the N
    completion positions instead of all batch x length (prompts and padding are skipped), and no batch-sized
    logits array exists. The fallback gathers from the full logits. ``chunk``: see chunked_forward."""
    split = split_head(model)
    if split is None:
        return chunked_forward(model, model, input_ids, chunk)[positions[0], positions[1]].astype(mx.float32)
    body, head = split
    return head(chunked_forward(body, model, input_ids, chunk)[positions[0], positions[1]]).astype(mx.float32)


def token_logps(logits: mx.array, input_ids: mx.array, positions: mx.array) -> tuple[mx.array, mx.array]:
    """(log p(next token) at each position, 0 at padding entries; log Z = logsumexp of the logits there).

    log p(y_t) = logit_t[y_t] - log Z_t with y_t = input_ids[row, col + 1] (TRL's selective_log_softmax of the
    shifted logits). log Z is returned so the entropy metric reuses it instead of computing it again."""
    targets = input_ids[positions[0], mx.minimum(positions[1] + 1, input_ids.shape[1] - 1)]  # (0, 0) padding
    log_z = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, targets[:, None], axis=-1).squeeze(-1)
    return mx.where(positions[2] > 0, picked - log_z, 0.0), log_z


def per_row(values: mx.array, positions: mx.array, rows: int) -> mx.array:
    """sum over the positions of each row of ``values`` (N,) -> (rows,); padding entries must hold 0."""
    owner = positions[0][None, :] == mx.arange(rows)[:, None]
    return mx.where(owner, values[None, :], 0.0).sum(-1)


def sequence_logps(model: nn.Module, input_ids: mx.array, positions: mx.array, chunked: bool = True) -> mx.array:
    """Sum over completion tokens of log p(token | prefix), per row (TRL's selective_log_softmax + sum), for the
    gradient-free passes, whose logits serve nothing else (chunked on the CPU: gradient_free_chunk, unless
    ``chunked`` is False). Rows are right-padded: the causal mask alone keeps padding out of every real position."""
    logits = completion_logits(model, input_ids, positions, gradient_free_chunk() if chunked else None)
    logps, _ = token_logps(logits, input_ids, positions)
    return per_row(logps, positions, input_ids.shape[0])


def logit_sums(logits: mx.array, log_z: mx.array, positions: mx.array, chosen: mx.array) -> dict[str, mx.array]:
    """What TRL's ``entropy`` and ``logits/*`` metrics are made of, over the completion tokens of the batch
    (``logits`` and ``log_z`` at ``positions``): the summed per-token entropy H_t = log Z_t - sum_v p_tv logit_tv,
    and per class the summed per-token mean over the vocabulary of the logits, with their token counts.
    No gradient flows through any of it."""
    logits, log_z = mx.stop_gradient(logits), mx.stop_gradient(log_z)
    valid = positions[2].astype(mx.float32)
    entropy = log_z - (mx.exp(logits - log_z[:, None]) * logits).sum(-1)
    token_chosen = chosen[positions[0]] * valid
    mean_logits = logits.mean(-1)
    return {"entropy_sum": (entropy * valid).sum(), "completion_tokens": valid.sum(),
            "logits_chosen_sum": (mean_logits * token_chosen).sum(), "chosen_tokens": token_chosen.sum(),
            "logits_rejected_sum": (mean_logits * (valid - token_chosen)).sum(),
            "rejected_tokens": (valid - token_chosen).sum()}


def _stacked(a: mx.array, b: mx.array) -> mx.array:
    """Two right-padded batches as one (zero-padded to the longer width): one forward instead of two."""
    width = max(a.shape[1], b.shape[1])
    pad = lambda x: mx.pad(x, [(0, 0), (0, width - x.shape[1])])  # noqa: E731
    return mx.concatenate([pad(a), pad(b)], axis=0)


def reference_logps(model: nn.Module, batch: Batch, cfg: KTOSettings, chunked: bool = True) -> dict[str, mx.array]:
    """The reference model's logps of the batch (``ref_logps``) and, for ``kto``, of the KL batch
    (``ref_KL_logps``): TRL's names. The two batches go through one forward, stacked (the KL rows' positions
    shifted by n). Fixed for the whole run (the reference never trains), so a job may compute them once,
    before the first step (precompute_ref_log_probs; ktoforge_mlx.trainer.precompute_references). ``chunked``:
    see sequence_logps."""
    batch = with_positions(batch)
    n = batch["input_ids"].shape[0]
    if not cfg.calculate_kl:
        with lora_disabled(model):
            return {"ref_logps": sequence_logps(model, batch["input_ids"], batch["positions"], chunked)}
    kl_positions = batch["KL_positions"]
    shifted = mx.concatenate([kl_positions[:1] + n, kl_positions[1:]], axis=0)
    with lora_disabled(model):
        ref = sequence_logps(model, _stacked(batch["input_ids"], batch["KL_input_ids"]),
                             mx.concatenate([batch["positions"], shifted], axis=1), chunked)
    return {"ref_logps": ref[:n], "ref_KL_logps": ref[n:]}


def fixed_terms(model: nn.Module, batch: Batch, cfg: KTOSettings,
                reference: dict[str, mx.array] | None = None, chunked: bool = True) -> dict[str, mx.array]:
    """What needs no gradient: reference logps of the batch and the clamped KL estimate.

    Computed outside the differentiated function so their graphs are freed before the backward pass.
    ``reference`` is reference_logps(model, batch, cfg), computed here when not given (not precomputed); the
    policy's logps of the KL batch change every step, so they are always computed here. ``chunked``: see
    sequence_logps.
    """
    batch = with_positions(batch)
    reference = reference_logps(model, batch, cfg, chunked) if reference is None else reference
    if not cfg.calculate_kl:
        return {"ref_logps": reference["ref_logps"], "kl": mx.array(0.0)}
    kl_policy = sequence_logps(model, batch["KL_input_ids"], batch["KL_positions"], chunked)
    kl = mx.maximum(mx.mean(kl_policy - reference["ref_KL_logps"]), 0.0)
    return {"ref_logps": reference["ref_logps"], "kl": kl}


def kto_loss(model: nn.Module, batch: Batch, cfg: KTOSettings,
             fixed: dict[str, mx.array] | None = None) -> tuple[mx.array, dict[str, mx.array]]:
    """Mean weighted KTO loss of one batch, and the sums TRL's metrics are made of.

    ``batch`` holds input_ids, completion_mask, label (bool) and, for ``kto``, KL_input_ids and
    KL_completion_mask: each completion paired with the previous row's prompt (TRL's +1 rotation); and
    ``positions`` / ``KL_positions`` (with_positions), computed here when absent (not possible under compile).
    ``fixed`` is fixed_terms(model, batch, cfg), computed here when not given.
    """
    batch = with_positions(batch)
    fixed = fixed_terms(model, batch, cfg) if fixed is None else fixed
    kl, ref_logps = mx.stop_gradient(fixed["kl"]), mx.stop_gradient(fixed["ref_logps"])
    labels, positions = batch["label"], batch["positions"]
    logits = completion_logits(model, batch["input_ids"], positions)
    token, log_z = token_logps(logits, batch["input_ids"], positions)
    logps = per_row(token, positions, labels.shape[0])
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
        **logit_sums(logits, log_z, positions, chosen),
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

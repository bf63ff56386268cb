"""The MLX training loop, in the style of mlx-lm's tuner/trainer.py: plain functions, no framework.

It reproduces what transformers' Trainer does around TRL's loss so both backends take the same steps:
the optimizer step count per epoch (partial last accumulation included, its loss divided by the batches it
really has), gradient clipping at 1.0, AdamW with bias correction, the warmup + schedule lambdas, the logs
(transformers' ``loss`` and ``epoch``, TRL's other metrics averaged over the batches since the last log) and
the eval policy (every ``save_steps`` and at the end, as transformers does with ``eval_steps=save_steps``).
The step → batches mapping is deterministic, so a resumed run continues exactly where its checkpoint left off.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ktoforge_mlx.kto import (Batch, KTOSettings, average_metrics, batch_metrics, computes_on_cpu, fixed_terms,
                              kto_loss, lora_layers, reference_logps, with_positions)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
ADAPTER_FILE = "adapters.safetensors"


@dataclass(frozen=True)
class Plan:
    """Step arithmetic of transformers' Trainer for a dataloader of ``num_batches`` batches."""

    num_batches: int
    grad_accum: int
    max_steps: int
    learning_rate: float
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    logging_steps: int = 1
    save_steps: int = 50
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    @classmethod
    def of(cls, num_batches: int, grad_accum: int, epochs: float, max_steps: int, **kw: Any) -> "Plan":
        per_epoch = max(num_batches // grad_accum + int(num_batches % grad_accum > 0), 1)
        steps = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
        return cls(num_batches, grad_accum, steps, **kw)

    @property
    def steps_per_epoch(self) -> int:
        return max(self.num_batches // self.grad_accum + int(self.num_batches % self.grad_accum > 0), 1)

    def batch_indices(self, step: int) -> range:
        """The dataloader batches that optimizer step ``step`` (0-based) accumulates."""
        window = step % self.steps_per_epoch
        return range(window * self.grad_accum, min((window + 1) * self.grad_accum, self.num_batches))

    def epoch_at(self, step: int) -> float:
        """transformers' ``state.epoch`` after ``step`` (≥ 1) optimizer steps: the epochs done plus the share of
        this epoch's batches consumed. It counts micro-batches, so a step of a partial last window adds less."""
        done = (step - 1) // self.steps_per_epoch
        return done + self.batch_indices(step - 1).stop / self.num_batches

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.max_steps * self.warmup_ratio)

    def lr_factor(self, step: int) -> float:
        """transformers' schedule lambdas ('constant' ignores warmup there too)."""
        if self.lr_scheduler_type == "constant":
            return 1.0
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.lr_scheduler_type == "linear":
            return max(0.0, (self.max_steps - step) / max(1, self.max_steps - self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(plan: Plan) -> optim.Optimizer:
    """torch's AdamW as transformers builds it (weight decay 0). The learning rate is a plain value that the
    training loop sets before each step from the plan's schedule: a schedule function would be traced into the
    compiled step, where a step count cannot become a Python int."""
    return optim.AdamW(learning_rate=plan.learning_rate * plan.lr_factor(0), betas=list(plan.adam_betas),
                       eps=plan.adam_eps, weight_decay=0.0, bias_correction=True)


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Recompute each of this model's transformer blocks in the backward pass, and train its adapters without
    dropout: mx.checkpoint's recompute draws new random numbers, so a LoRA dropout mask would differ between the
    forward and the backward pass and the gradient would be wrong (seen: off by orders of magnitude).

    mlx-lm's own helper (tuner.trainer.grad_checkpoint) replaces the block class's ``__call__``: every model of
    that class in the process, then and later, is checkpointed. The Mac worker trains job after job in one
    process (solo pool), so a job without checkpointing that came after one with it would be checkpointed too,
    its dropout still on: wrong gradients. Here each block of this model becomes an instance of a subclass that
    checkpoints (_checkpointed); the class itself, and every other model, stay as they were."""
    for _, layer in lora_layers(model):
        layer.dropout = nn.Identity()
    for block in model.layers:
        block.__class__ = _checkpointed(type(block))


@cache
def _checkpointed(block: type) -> type:
    """``block`` whose call is recomputed in the backward pass (mlx-lm's grad_checkpoint, as a subclass); itself
    when it checkpoints already."""
    if getattr(block, "ktoforge_checkpointed", False):
        return block
    call = block.__call__

    def checkpointed_call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        def inner(params: Any, *args: Any, **kwargs: Any) -> Any:
            self.update(params)
            return call(self, *args, **kwargs)

        return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

    return type(f"Checkpointed{block.__name__}", (block,), {"__call__": checkpointed_call,
                                                           "ktoforge_checkpointed": True})


PAD_MULTIPLE = 32  # widths rounded up to this (as mlx-lm's batches are): few shapes, few compilations


def bucketed(batch: Batch) -> Batch:
    """The batch right-padded to a multiple of PAD_MULTIPLE tokens, with its completion positions (kto.
    with_positions: data-dependent, so found here on the host, outside the compiled step). The compiled step is
    traced once per input shape; rounding keeps that to a handful. Extra right padding changes no number: each
    position attends only to earlier ones and padded positions are masked out of every sum."""
    out = dict(batch)
    for prefix in ("", "KL_"):
        if f"{prefix}input_ids" not in batch:
            continue
        width = batch[f"{prefix}input_ids"].shape[1]
        extra = -width % PAD_MULTIPLE
        for key in (f"{prefix}input_ids", f"{prefix}completion_mask"):
            out[key] = mx.pad(batch[key], [(0, 0), (0, extra)]) if extra else batch[key]
    return with_positions(out)


class CompiledStep:
    """One optimizer step as mlx-lm's trainer runs it: ``value_and_grad`` built once, the reference pass, the
    micro-batch gradient and the update each ``mx.compile``-d with the model, optimizer and random state (the
    random state makes LoRA dropout draw a new mask on each call instead of one traced into the graph).

    On the GPU (and with ``streams=False``), two evaluations per micro-batch: the gradient-free passes
    (reference, and the policy on the KL batch; only the latter when the reference logps were precomputed:
    ``policy_kl``), then the gradient. One graph for both would keep the gradient-free passes' logits alive
    through the backward pass: measured on CPU, 11 batch-sized float32 logits arrays at the peak instead of 4,
    which for Mistral-7B at batch 2 x 1024 tokens is 1.9 GB more (tests/mlx/test_fit.py, which measures this
    path). The gradient pass evaluates the loss and the metrics before the gradients: in the other order the
    metrics' logits stay alive through the whole backward pass (measured: 4 logits arrays at the peak instead of
    3). Nothing is read back to the host until the step is done.

    On the CPU (``streams``, by default where MLX computes on the CPU) the reference pass runs on a second stream,
    each stream a thread of its own, while the first runs the policy's KL pass and the gradient pass's forward;
    the backward starts once the reference logps are in. MLX's CPU matmul uses one core, so the step's passes
    otherwise leave the other idle: measured on the bench's batch (bench/RESULTS.md, stop 25), the step 14-30 %
    shorter at its minimum. Both passes run unchunked there: chunks (kto.chunked_forward) make many small
    operations, which the two threads do not overlap (1.2 cores busy, against 1.5).

    Built after a checkpoint is loaded: the compiled functions hold the optimizer's state dict itself.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, cfg: KTOSettings, max_grad_norm: float,
                 streams: bool | None = None):
        self.model, self.optimizer = model, optimizer
        loss_and_grad = nn.value_and_grad(model, lambda m, b, fixed: kto_loss(m, b, cfg, fixed))
        if not optimizer._initialized:  # its moments must exist before they are traced as inputs
            optimizer.init(model.trainable_parameters())
        state = [model.state, optimizer.state, mx.random.state]
        compiled = partial(mx.compile, inputs=state, outputs=state)
        self.side = mx.new_stream(mx.cpu) if (computes_on_cpu() if streams is None else streams) else None
        # no gradient flows through the fixed terms (stop_gradient in kto_loss)
        self.reference = compiled(lambda batch: fixed_terms(model, batch, cfg))
        # the KL term, the reference logps given (precomputed, or from the second stream): unchunked with streams
        chunked = self.side is None
        self.policy_kl = compiled(lambda batch, reference: fixed_terms(model, batch, cfg, reference, chunked))
        # the second stream's pass: the reference logps alone (the model's state only read)
        self.reference_apart = mx.compile(lambda batch: reference_logps(model, batch, cfg, chunked=False),
                                          inputs=[model.state])

        @compiled
        def micro(batch: Batch, fixed: dict[str, mx.array], previous: Any,
                  scale: float) -> tuple[mx.array, dict[str, mx.array], Any]:
            (loss, aux), grads = loss_and_grad(model, batch, fixed)
            grads = tree_map(lambda g: g * scale, grads)
            return loss, aux, grads if previous is None else tree_map(mx.add, grads, previous)

        @compiled
        def update(grads: Any) -> mx.array:
            clipped, norm = optim.clip_grad_norm(grads, max_grad_norm)
            optimizer.update(model, clipped)
            return norm

        self.micro, self.update = micro, update

    def fixed(self, batch: Batch, reference: dict[str, mx.array] | None) -> dict[str, mx.array]:
        """The micro-batch's gradient-free terms (kto.fixed_terms): evaluated here, or on the CPU left to evaluate
        with the gradient pass, the reference pass on the second stream (the class says why). The CPU's KL pass is
        unchunked with precomputed references too: a chunked pass draws a LoRA dropout mask per chunk, and a job
        must draw the same masks with the option on as off."""
        if self.side is not None:
            if reference is None:
                with mx.stream(self.side):
                    reference = self.reference_apart(batch)
            return self.policy_kl(batch, reference)
        fixed = self.reference(batch) if reference is None else self.policy_kl(batch, reference)
        mx.eval(fixed)
        return fixed

    def __call__(self, batches: list[Batch], lr: float,
                 references: list[dict[str, mx.array]] | None = None) -> tuple[float, list[dict[str, float]]]:
        """(pre-clip gradient norm, each micro-batch's TRL metrics) of one step over ``batches``; ``references``:
        their precomputed reference logps (precompute_references), or None to compute them in the step."""
        self.optimizer.learning_rate = lr
        grads, sums = None, []
        for i, batch in enumerate(map(bucketed, batches)):
            fixed = self.fixed(batch, None if references is None else references[i])
            loss, aux, grads = self.micro(batch, fixed, grads, 1.0 / len(batches))
            mx.eval(loss, aux, grads)
            sums.append((loss, aux))
        norm = self.update(grads)
        mx.eval(self.model.state, self.optimizer.state, norm)
        return norm.item(), [batch_metrics(loss.item(), {k: v.item() for k, v in aux.items()}) for loss, aux in sums]


def precompute_references(model: nn.Module, get_batch: Callable[[int], Batch], cfg: KTOSettings, num_batches: int,
                          should_stop: Callable[[], bool] = lambda: False) -> list[dict[str, mx.array]] | None:
    """kto.reference_logps of each dataloader batch of an epoch, in order: TRL's precompute_ref_log_probs, whose
    pass runs the batches its sequential sampler then trains on (the KL pairs are fixed within a batch). Each
    step then runs one gradient-free forward (the policy on the KL batch) instead of two, for one pass over the
    data up front. Compiled like the step's own reference pass; None if ``should_stop`` says so between two
    batches (a cancel during a long pass)."""
    state = [model.state]
    compiled = mx.compile(lambda batch: reference_logps(model, batch, cfg), inputs=state, outputs=state)
    references = []
    for i in range(num_batches):
        if should_stop():
            return None
        reference = compiled(bucketed(get_batch(i)))
        mx.eval(reference)
        references.append(reference)
    return references


def evaluate(model: nn.Module, batches: list[Batch], cfg: KTOSettings, num_tokens: int = 0) -> dict[str, float]:
    """The eval log of TRL's KTOTrainer over the held-out batches, dropout off: ``eval_loss`` as transformers'
    evaluation loop makes it (each batch's loss weighted by its rows), TRL's other metrics averaged over the
    batches, ``eval_num_tokens`` TRL's count of the tokens trained on so far, and transformers' speed figures."""
    started = time.time()
    model.eval()
    per_batch, rows = [], []
    for batch in batches:
        loss, aux = kto_loss(model, batch, cfg)
        mx.eval(loss, aux)
        per_batch.append(batch_metrics(loss.item(), {k: v.item() for k, v in aux.items()}))
        rows.append(batch["input_ids"].shape[0])
    model.train()
    runtime = max(time.time() - started, 1e-9)
    out = {f"eval_{k}": v for k, v in average_metrics(per_batch).items()}
    out.update(eval_loss=sum(m["loss"] * n for m, n in zip(per_batch, rows)) / sum(rows),
               eval_num_tokens=float(num_tokens), eval_runtime=round(runtime, 4),
               eval_samples_per_second=round(sum(rows) / runtime, 3),
               eval_steps_per_second=round(len(batches) / runtime, 3))
    return out


def save_checkpoint(folder: Path, model: nn.Module, optimizer: optim.Optimizer, step: int) -> None:
    """Adapters, optimizer moments, MLX's random state (the LoRA dropout masks to come: a resumed run draws
    the ones the uninterrupted run would, as transformers' rng_state does on torch) and the step, written to a
    temp dir then renamed (a crash leaves no half)."""
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(tmp / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters())))
    mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    key = [int(half) for half in mx.random.state[0].tolist()]
    (tmp / STATE_FILE).write_text(json.dumps({"global_step": step, "random_key": key}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def load_checkpoint(folder: Path, model: nn.Module, optimizer: optim.Optimizer) -> int:
    """Restore what save_checkpoint wrote; returns the step to continue from."""
    model.load_weights(list(mx.load(str(folder / ADAPTER_FILE)).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(folder / OPTIMIZER_FILE)).items()))
    state = json.loads((folder / STATE_FILE).read_text())
    if "random_key" in state:  # absent from checkpoints written before dropout was applied
        high, low = state["random_key"]
        mx.random.seed((high << 32) | low)  # a seed's key is its two 32-bit halves: the saved key itself
    return int(state["global_step"])


def latest_checkpoint(root: Path) -> Path | None:
    done = [p for p in root.glob("checkpoint-*") if (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


Report = Callable[[dict[str, Any]], None]


@dataclass
class LogWindow:
    """What one training log averages, as transformers and TRL account for it.

    TRL's metrics: the mean of what each micro-batch appended since the last log (KTOTrainer.log). ``loss``:
    transformers' tr_loss, the mean over the optimizer steps since the last log of each step's loss (the mean
    of its micro-batches: a partial last window weighs as much as a full one). ``num_tokens``: TRL's running
    count of the tokens trained on (the attention mask: padding excluded) since this run began.
    """

    batches: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    num_tokens: int = 0

    def add(self, metrics: list[dict[str, float]], tokens: int) -> None:
        self.batches += metrics
        self.step_losses.append(sum(m["loss"] for m in metrics) / len(metrics))
        self.num_tokens += tokens

    def flush(self) -> dict[str, float]:
        out = {**average_metrics(self.batches), "loss": sum(self.step_losses) / len(self.step_losses),
               "num_tokens": float(self.num_tokens)}
        self.batches, self.step_losses = [], []
        return out


def _progress(plan: Plan, step: int, start_step: int, started: float, tokens: int) -> dict[str, Any]:
    """transformers' epoch and step, plus ours: max_steps, eta_s and tokens_per_s (of this run, since it began)."""
    elapsed = time.monotonic() - started
    return {"epoch": plan.epoch_at(step), "step": step, "max_steps": plan.max_steps,
            "eta_s": round(elapsed / (step - start_step) * (plan.max_steps - step), 1),
            "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1)}


def train(model: nn.Module, optimizer: optim.Optimizer, get_batch: Callable[[int], Batch], cfg: KTOSettings,
          plan: Plan, report: Report, should_stop: Callable[[], bool] = lambda: False,
          checkpoint_root: Path | None = None, start_step: int = 0,
          on_checkpoint: Callable[[Path, int], None] = lambda folder, step: None,
          eval_batches: list[Batch] | None = None, references: list[dict[str, mx.array]] | None = None) -> int:
    """Optimizer steps ``start_step`` … ``plan.max_steps``; returns the last completed step. What it reports
    is named as ktoforge.metrics declares (TRAIN_LOG and EVAL_LOG, plus tokens_per_s).

    ``get_batch(i)`` returns dataloader batch ``i`` of an epoch (as data.collate makes it). Logs every
    ``logging_steps``, at the end and at a stop. Evaluates ``eval_batches`` every ``save_steps`` and at the end
    of a completed run, not after a stop. Checkpoints every ``save_steps`` and at a stop, each then passed to
    ``on_checkpoint``; ``should_stop`` is checked after every step (cancel, lost lease). ``references``: the
    reference logps of batch ``i`` at ``references[i]`` (precompute_references), or None: computed each step.
    """
    model.train()
    compiled = CompiledStep(model, optimizer, cfg, plan.max_grad_norm)
    window, started, step = LogWindow(), time.monotonic(), start_step
    while step < plan.max_steps:
        indices = plan.batch_indices(step)
        batches = [get_batch(i) for i in indices]
        lr = plan.learning_rate * plan.lr_factor(step)
        refs = None if references is None else [references[i] for i in indices]
        grad_norm, metrics = compiled(batches, lr, refs)
        step += 1
        window.add(metrics, sum(int(b["lengths"].sum().item()) for b in batches))
        stopping = should_stop()
        if step % plan.logging_steps == 0 or step == plan.max_steps or stopping:
            report({**window.flush(), "grad_norm": grad_norm, "learning_rate": lr,
                    **_progress(plan, step, start_step, started, window.num_tokens)})
        if eval_batches and not stopping and (step % plan.save_steps == 0 or step == plan.max_steps):
            report({**evaluate(model, eval_batches, cfg, window.num_tokens),
                    **_progress(plan, step, start_step, started, window.num_tokens)})
        if checkpoint_root is not None and (step % plan.save_steps == 0 or stopping):
            save_checkpoint(checkpoint_root / f"checkpoint-{step}", model, optimizer, step)
            on_checkpoint(checkpoint_root / f"checkpoint-{step}", step)
        if stopping:
            break
    return step

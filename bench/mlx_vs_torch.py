"""How much KTO adds over a LoRA SFT step, in MLX (ours) and in torch (TRL), on the same tiny model and batch.

Prints one ``name value`` line per measure: mlx_kto_over_sft_ratio, torch_kto_over_sft_ratio,
mlx_torch_step_ratio (the first over the second: KTO's relative cost in MLX against TRL's; goal <= 0.8),
mlx_over_torch_step_ratio (KTO step time, MLX / torch), mlx_kto_step_s and mlx_kto_step_uncompiled_s (our
step compiled, as the trainer runs it, and as it ran before), mlx_kto_gradient_free_share (the share of our
step that its three gradient-free forwards take: reference on the batch and on the KL batch, policy on the KL
batch; what dominates the step), mlx_kto_tokens_per_s, torch_kto_tokens_per_s.
A step is forward + backward + AdamW update; each is warmed up, then all six steps, MLX's and torch's, alternate
(so a change in the machine's load between the two backends' turns cannot move the ratio) and the median of each is
taken. The MLX SFT step is compiled as mlx-lm's trainer compiles it.
Run: .venv/bin/python bench/mlx_vs_torch.py [--rows 4] [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
MAX_LENGTH = 192
sys.path.insert(0, str(ROOT))  # the parity fixtures build the same model pair the tests use


def median_times(*steps: Callable[[], None], warmup: int, repeats: int) -> list[float]:
    """Median time of each step function, all alternated step by step so load on shared cores hits each alike."""
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, out in zip(steps, times):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


MlxSteps = tuple[Callable[[], None], Callable[[], None], Callable[[], None], Callable[[], None], int]


def mlx_steps(pair, rows: int) -> MlxSteps:
    """(our KTO step as the trainer runs it — compiled —, the same step uncompiled as it was before, mlx-lm's
    LoRA SFT step compiled as mlx-lm's trainer compiles it, the step's gradient-free forwards alone, compiled,
    tokens in the batch)."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss

    from ktoforge_mlx.data import collate
    from ktoforge_mlx.kto import KTOSettings, fixed_terms, kto_loss
    from ktoforge_mlx.trainer import CompiledStep, bucketed

    model = pair.mlx_model
    model.train()
    batch = collate(pair.mlx_rows[:rows], pad_id=0, max_length=MAX_LENGTH)
    cfg = KTOSettings()
    opt = optim.AdamW(learning_rate=1e-4, weight_decay=0.0, bias_correction=True)
    compiled_kto = CompiledStep(model, opt, cfg, max_grad_norm=1.0)
    kto_grad = nn.value_and_grad(model, lambda m, b, fixed: kto_loss(m, b, cfg, fixed)[0])
    sft_grad = nn.value_and_grad(model, lambda m, b, lengths: default_loss(m, b, lengths)[0])
    prompt_lens = [min(len(r.prompt_ids), MAX_LENGTH) for r in pair.mlx_rows[:rows]]
    full_lens = [min(len(r.prompt_ids) + len(r.completion_ids), MAX_LENGTH) for r in pair.mlx_rows[:rows]]
    lengths = mx.array([[p, f - 1] for p, f in zip(prompt_lens, full_lens)])
    state = [model.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def sft_update(ids: mx.array, lens: mx.array) -> mx.array:
        loss, grads = sft_grad(model, ids, lens)
        opt.update(model, grads)
        return loss

    def kto_step() -> None:
        compiled_kto([batch], 1e-4)

    def kto_uncompiled_step() -> None:  # the loop before the compiled step: eval between passes, per call grad
        fixed = fixed_terms(model, batch, cfg)
        mx.eval(fixed)
        _, grads = kto_grad(model, batch, fixed)
        opt.update(model, grads)
        mx.eval(model.trainable_parameters(), opt.state)

    def sft_step() -> None:
        mx.eval(sft_update(batch["input_ids"], lengths), model.state, opt.state)

    prepared = bucketed(batch)  # what the compiled step gets: padded, with its completion positions

    def gradient_free_step() -> None:  # the compiled step's own gradient-free pass
        mx.eval(compiled_kto.reference(prepared))

    return kto_step, kto_uncompiled_step, sft_step, gradient_free_step, sum(full_lens)


def torch_steps(pair, rows: int) -> tuple[Callable[[], None], Callable[[], None], int]:
    """(TRL's KTO training step, a plain LoRA SFT step on the same PEFT model, tokens in the batch)."""
    import torch

    trainer = pair.trainer
    model = trainer.model
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)

    def kto_step() -> None:
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()

    def sft_step() -> None:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    return kto_step, sft_step, int(batch["attention_mask"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="rows per batch")
    parser.add_argument("--steps", type=int, default=15, help="timed steps of each kind (after 2 warm-up steps)")
    args = parser.parse_args()

    import torch

    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path
    from tests.mlx.conftest import make_pair

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_dir = builtin_path(TINY_MISTRAL, ROOT / "var" / "models")
    with tempfile.TemporaryDirectory() as out:
        pair = make_pair(DATASET, model_dir, Path(out))
        kto, kto_uncompiled, sft, gradient_free, mt = mlx_steps(pair, args.rows)
        torch_kto, torch_sft, tt = torch_steps(pair, args.rows)
        mk, mu, ms, mf, tk, ts = median_times(kto, kto_uncompiled, sft, gradient_free, torch_kto, torch_sft,
                                              warmup=2, repeats=args.steps)
    print(f"mlx_kto_over_sft_ratio {mk / ms:.3f}")
    print(f"torch_kto_over_sft_ratio {tk / ts:.3f}")
    print(f"mlx_torch_step_ratio {(mk / ms) / (tk / ts):.3f}")  # what KTO adds in MLX over what it adds in TRL
    print(f"mlx_over_torch_step_ratio {mk / tk:.3f}")
    print(f"mlx_kto_step_s {mk:.4f}")
    print(f"mlx_kto_step_uncompiled_s {mu:.4f}")
    print(f"mlx_kto_gradient_free_share {mf / mk:.3f}")
    print(f"mlx_kto_tokens_per_s {mt / mk:.1f}")
    print(f"torch_kto_tokens_per_s {tt / tk:.1f}")


if __name__ == "__main__":
    main()

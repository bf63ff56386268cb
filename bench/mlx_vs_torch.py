"""How much KTO adds over a LoRA SFT step, in MLX (ours) and in torch (TRL), on the same tiny model and batch.

Prints one ``name value`` line per measure: mlx_kto_over_sft_ratio, torch_kto_over_sft_ratio,
mlx_over_torch_step_ratio (KTO step time, MLX / torch), mlx_kto_tokens_per_s, torch_kto_tokens_per_s.
A step is forward + backward + AdamW update; each is warmed up, then KTO and SFT steps alternate and the
median of each is taken.
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
DATASET = ROOT.parent / "shared" / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
MAX_LENGTH = 192
sys.path.insert(0, str(ROOT))  # the parity fixtures build the same model pair the tests use


def median_times(kto: Callable[[], None], sft: Callable[[], None], warmup: int, steps: int) -> tuple[float, float]:
    """Median KTO and SFT step times, the two alternated step by step so load on shared cores hits both alike."""
    for _ in range(warmup):
        kto()
        sft()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        for step, out in ((kto, times[0]), (sft, times[1])):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def mlx_steps(pair, rows: int) -> tuple[Callable[[], None], Callable[[], None], int]:
    """(our KTO step, mlx-lm's own LoRA SFT step, tokens in the batch)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss

    from ktoforge_mlx.data import collate
    from ktoforge_mlx.kto import KTOSettings, fixed_terms, kto_loss

    model = pair.mlx_model
    model.train()
    batch = collate(pair.mlx_rows[:rows], pad_id=0, max_length=MAX_LENGTH)
    cfg = KTOSettings()
    kto_grad = nn.value_and_grad(model, lambda m, b, fixed: kto_loss(m, b, cfg, fixed)[0])
    sft_grad = nn.value_and_grad(model, lambda m, b, lengths: default_loss(m, b, lengths)[0])
    prompt_lens = [min(len(r.prompt_ids), MAX_LENGTH) for r in pair.mlx_rows[:rows]]
    full_lens = [min(len(r.prompt_ids) + len(r.completion_ids), MAX_LENGTH) for r in pair.mlx_rows[:rows]]
    lengths = mx.array([[p, f - 1] for p, f in zip(prompt_lens, full_lens)])
    opt = optim.AdamW(learning_rate=1e-4, weight_decay=0.0, bias_correction=True)

    def kto_step() -> None:
        fixed = fixed_terms(model, batch, cfg)  # as the trainer does: no-grad passes evaluated first
        mx.eval(fixed)
        _, grads = kto_grad(model, batch, fixed)
        opt.update(model, grads)
        mx.eval(model.trainable_parameters(), opt.state)

    def sft_step() -> None:
        _, grads = sft_grad(model, batch["input_ids"], lengths)
        opt.update(model, grads)
        mx.eval(model.trainable_parameters(), opt.state)

    return kto_step, sft_step, sum(full_lens)


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
        results = {}
        for backend, build in (("mlx", mlx_steps), ("torch", torch_steps)):
            kto, sft, tokens = build(pair, args.rows)
            results[backend] = (*median_times(kto, sft, 2, args.steps), tokens)
    (mk, ms, mt), (tk, ts, tt) = results["mlx"], results["torch"]
    print(f"mlx_kto_over_sft_ratio {mk / ms:.3f}")
    print(f"torch_kto_over_sft_ratio {tk / ts:.3f}")
    print(f"mlx_over_torch_step_ratio {mk / tk:.3f}")
    print(f"mlx_kto_tokens_per_s {mt / mk:.1f}")
    print(f"torch_kto_tokens_per_s {tt / tk:.1f}")


if __name__ == "__main__":
    main()

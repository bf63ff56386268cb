"""How much KTO adds over a LoRA SFT step, in MLX (ours) and in torch (TRL), on the same tiny model and batch.

Prints one ``name value`` line per measure: mlx_kto_over_sft_ratio, torch_kto_over_sft_ratio,
mlx_torch_step_ratio (the first over the second: KTO's relative cost in MLX against TRL's; goal <= 0.8),
mlx_over_torch_step_ratio (KTO step time, MLX / torch), mlx_kto_step_s and mlx_kto_step_uncompiled_s (our
step compiled, as the trainer runs it, and as it ran before), mlx_kto_gradient_free_share (its three
gradient-free forwards, reference on the batch and on the KL batch, policy on the KL batch, run one after the
other as Metal runs them, over our step: what they cost alone; on the CPU the step runs them beside its gradient
pass, on two streams, so this can pass what they add), mlx_kto_tokens_per_s, torch_kto_tokens_per_s; then the
same ratios with the job option precompute_ref_log_probs on both sides (TRL's precomputed batch; ours,
precompute_references): mlx_precomputed_kto_over_sft_ratio, torch_precomputed_kto_over_sft_ratio,
mlx_torch_precomputed_step_ratio, and mlx_precompute_ref_step_ratio (our step with the option on over off:
precompute_ref.py's figure, on MLX).
Last, the floor of each ratio: mlx_kto_floor_ratio and torch_kto_floor_ratio, 1 + 3 x (a plain gradient-free
forward of the batch) / (the SFT step). KTO as TRL defines it runs three gradient-free forwards besides a
gradient pass like SFT's (the reference on the batch and on the KL batch, the policy on the KL batch): run as
plain forwards, as TRL runs them, they put the KTO step at its floor. mlx_torch_floor_ratio (the first floor
over the second) is the mlx_torch_step_ratio that plain forwards on both sides would give; mlx_kto_over_floor
and torch_kto_over_floor say where each KTO step sits against its own floor (below 1: forwards cheaper than
plain ones, as ours are, with the LM head on the completion positions only, or run beside the gradient pass, as
ours are on the CPU: ktoforge_mlx.trainer.CompiledStep).
A step is forward + backward + AdamW update. The backends take turns, round after round, each turn warmed up first,
and the median of each step is taken (median_times). The MLX SFT step is compiled as mlx-lm's trainer compiles it.
Run: .venv/bin/python bench/mlx_vs_torch.py [--rows 4] [--rounds 5] [--steps 3]
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


def median_times(*groups: tuple[Callable[[], None], ...], rounds: int, per_round: int) -> list[list[float]]:
    """Median time of each step function of each group (a backend's steps), over ``rounds`` x ``per_round`` runs.

    Each round runs every group in turn, so a change in the machine's load between the backends' turns hits
    both alike. Inside a group the steps alternate. A group's first pass in a round is a warm-up, not timed: a
    framework's threads and caches come back from the other framework's turn (measured: torch's KTO step
    25 % slower right after an MLX step than after its own), which a training run, one framework throughout,
    never pays.
    """
    times = [[[] for _ in group] for group in groups]
    for _ in range(rounds):
        for group, out in zip(groups, times):
            for step in group:
                step()
            for _ in range(per_round):
                for step, samples in zip(group, out):
                    start = time.perf_counter()
                    step()
                    samples.append(time.perf_counter() - start)
    return [[statistics.median(t) for t in group] for group in times]


Steps = dict[str, Callable[[], None]]


def mlx_steps(pair, rows: int) -> tuple[Steps, int]:
    """(the steps by name, tokens in the batch): ``kto``, our KTO step as the trainer runs it (compiled);
    ``kto_uncompiled``, the same step as it ran before; ``sft``, mlx-lm's LoRA SFT step compiled as mlx-lm's
    trainer compiles it; ``gradient_free``, the step's gradient-free forwards alone; ``kto_precomputed``, our
    KTO step with the reference logps precomputed (the job option precompute_ref_log_probs); ``forward``, one
    plain forward of the batch through the model, gradient-free (the floor's unit)."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss

    from ktoforge_mlx.data import collate
    from ktoforge_mlx.kto import KTOSettings, fixed_terms, kto_loss
    from ktoforge_mlx.trainer import CompiledStep, bucketed, precompute_references

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

    references = precompute_references(model, lambda i: batch, cfg, 1)

    def kto_precomputed_step() -> None:
        compiled_kto([batch], 1e-4, references)

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

    def forward_step() -> None:
        mx.eval(model(batch["input_ids"]))

    return {"kto": kto_step, "kto_uncompiled": kto_uncompiled_step, "sft": sft_step,
            "gradient_free": gradient_free_step, "kto_precomputed": kto_precomputed_step,
            "forward": forward_step}, sum(full_lens)


def torch_steps(trainer) -> tuple[Steps, int]:
    """(the steps by name, tokens in the batch): ``kto``, TRL's KTO training step, and ``sft``, a plain LoRA SFT
    step on the same PEFT model, each on the trainer's first batch (which holds the precomputed reference logps
    when its KTOConfig asks for them); ``forward``, one gradient-free forward of that batch, as TRL runs its
    KL and reference forwards."""
    import torch

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

    def forward_step() -> None:
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    return {"kto": kto_step, "sft": sft_step, "forward": forward_step}, int(batch["attention_mask"].sum())


def floor(steps: dict[str, float]) -> float:
    """KTO's step over the SFT step, were three plain gradient-free forwards its only cost beyond SFT's."""
    return 1 + 3 * steps["forward"] / steps["sft"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="rows per batch")
    parser.add_argument("--rounds", type=int, default=5, help="rounds: each backend's turn once in each")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each kind per round (after a warm-up)")
    args = parser.parse_args()

    import torch

    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path
    from tests.mlx.conftest import make_pair

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_dir = builtin_path(TINY_MISTRAL, ROOT / "var" / "models")
    with tempfile.TemporaryDirectory() as out:
        pair = make_pair(DATASET, model_dir, Path(out) / "each_step")
        precomputing = make_pair(DATASET, model_dir, Path(out) / "precomputed", precompute_ref_log_probs=True)
        mlx, mt = mlx_steps(pair, args.rows)
        torch_, tt = torch_steps(pair.trainer)
        torch_["kto_precomputed"] = torch_steps(precomputing.trainer)[0]["kto"]
        m, t = [dict(zip(steps, times)) for steps, times in
                zip((mlx, torch_), median_times(tuple(mlx.values()), tuple(torch_.values()),
                                                rounds=args.rounds, per_round=args.steps))]
    mlx_ratio, torch_ratio = m["kto"] / m["sft"], t["kto"] / t["sft"]
    print(f"mlx_kto_over_sft_ratio {mlx_ratio:.3f}")
    print(f"torch_kto_over_sft_ratio {torch_ratio:.3f}")
    print(f"mlx_torch_step_ratio {mlx_ratio / torch_ratio:.3f}")  # what KTO adds in MLX over what it adds in TRL
    print(f"mlx_over_torch_step_ratio {m['kto'] / t['kto']:.3f}")
    print(f"mlx_kto_step_s {m['kto']:.4f}")
    print(f"mlx_kto_step_uncompiled_s {m['kto_uncompiled']:.4f}")
    print(f"mlx_kto_gradient_free_share {m['gradient_free'] / m['kto']:.3f}")
    print(f"mlx_kto_tokens_per_s {mt / m['kto']:.1f}")
    print(f"torch_kto_tokens_per_s {tt / t['kto']:.1f}")
    mlx_pre, torch_pre = m["kto_precomputed"] / m["sft"], t["kto_precomputed"] / t["sft"]
    print(f"mlx_precomputed_kto_over_sft_ratio {mlx_pre:.3f}")  # precompute_ref_log_probs on, both backends
    print(f"torch_precomputed_kto_over_sft_ratio {torch_pre:.3f}")
    print(f"mlx_torch_precomputed_step_ratio {mlx_pre / torch_pre:.3f}")
    print(f"mlx_precompute_ref_step_ratio {m['kto_precomputed'] / m['kto']:.3f}")  # precompute_ref.py's, on MLX
    print(f"mlx_kto_floor_ratio {floor(m):.3f}")
    print(f"torch_kto_floor_ratio {floor(t):.3f}")
    print(f"mlx_torch_floor_ratio {floor(m) / floor(t):.3f}")  # what plain forwards on both sides would give
    print(f"mlx_kto_over_floor {mlx_ratio / floor(m):.3f}")
    print(f"torch_kto_over_floor {torch_ratio / floor(t):.3f}")


if __name__ == "__main__":
    main()

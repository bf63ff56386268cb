"""The memory estimate's MLX terms (ktoforge.fit with device "mlx") against the MLX worker's real training step.

MLX counts its own allocations (``mx.get_peak_memory``), so the peak of one compiled step (our CompiledStep:
reference pass, gradient pass, AdamW update) is measured exactly, in this process, on a builtin-shaped Mistral
built with mlx-lm's own Llama class. A term is isolated by changing only what it depends on:

- logits: two vocabularies, everything else equal; the difference in peak, in batch x length x vocabulary float32
  arrays, is the number of logits arrays alive at the peak (``LOGIT_COPIES["mlx"]``);
- activations: two depths; the difference per layer is what one layer keeps for its backward.

Each must be within ±25 % of the formula, like the torch terms in tests/shared/test_fit.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from ktoforge.fit import LOGIT_COPIES, ModelShape, TrainPlan, activation_bytes
from ktoforge.schemas import LoraSettings

mx = pytest.importorskip("mlx.core")

TOLERANCE = 0.25
BATCH, LENGTH, RANK = 2, 64, 8
SHAPE = {"vocab_size": 4096, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64}


def step_peak(shape: dict[str, int], length: int = LENGTH) -> int:
    """Bytes above the resident model that one compiled KTO step allocates at its peak (second step: the first
    one compiles)."""
    from mlx_lm.models.llama import Model, ModelArgs

    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.lora import add_lora, lora_parameters
    from ktoforge_mlx.trainer import CompiledStep, Plan, make_optimizer

    mx.random.seed(0)
    model = Model(ModelArgs(model_type="llama", rms_norm_eps=1e-5, tie_word_embeddings=False, **shape))
    add_lora(model, lora_parameters(model, LoraSettings(r=RANK, lora_alpha=16, lora_dropout=0.0)))
    mx.eval(model.parameters())
    # streams=False: the path Metal runs (the CPU's two streams overlap the passes: CompiledStep)
    step = CompiledStep(model, make_optimizer(Plan.of(1, 1, 1, 2, learning_rate=1e-4)), KTOSettings(), 1.0,
                        streams=False)
    batch = _batch(length)
    step([batch], 1e-4)
    mx.clear_cache()
    resident = mx.get_active_memory()
    mx.reset_peak_memory()
    step([batch], 1e-4)
    return mx.get_peak_memory() - resident


def _batch(length: int) -> dict[str, Any]:
    """The estimate's worst case: a one-token prompt, so every position but the last predicts a completion token
    (the step computes logits at those positions only)."""
    ids = mx.random.randint(5, 500, (BATCH, length))
    completion = mx.concatenate([mx.zeros((BATCH, 1)), mx.ones((BATCH, length - 1))], axis=1)
    return {"input_ids": ids, "completion_mask": completion, "KL_input_ids": mx.roll(ids, 1, 0),
            "KL_completion_mask": completion, "label": mx.array([i % 2 == 0 for i in range(BATCH)]),
            "lengths": mx.array([length] * BATCH)}


def close(measured: float, predicted: float) -> bool:
    return abs(measured - predicted) <= TOLERANCE * predicted


def test_logits_arrays_at_the_peak_are_the_formulas() -> None:
    """Was 11 before the reference pass got its own evaluation and the logits stopped being sliced (a copy)."""
    small, large = 4096, 32768
    growth = step_peak({**SHAPE, "vocab_size": large}) - step_peak({**SHAPE, "vocab_size": small})
    arrays = growth / (BATCH * LENGTH * (large - small) * 4)
    assert close(arrays, LOGIT_COPIES["mlx"]), f"{arrays:.2f} logits arrays at the peak, formula {LOGIT_COPIES['mlx']}"


def test_activations_per_layer_are_the_formulas() -> None:
    """Without checkpointing, what one more decoder layer adds to the peak (the torch-derived per-layer formula,
    LoRA on all seven projections, float32). A small vocabulary, wider layers and longer rows: the peak is in the
    layers. (Measured: 1.17x the formula at hidden 256 x 128 tokens, 1.16x at 512 x 256, which took 6x longer.)"""
    shallow = {**SHAPE, "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 512}
    deep = {**shallow, "num_hidden_layers": 2}
    per_layer = step_peak(deep, 2 * LENGTH) - step_peak(shallow, 2 * LENGTH)
    plan = TrainPlan(quantization="fp32", r=RANK, lora_dropout=0.0, batch=BATCH, max_length=2 * LENGTH,
                     gradient_checkpointing=False, device="mlx")
    shapes = [ModelShape.from_config({**s, "tie_word_embeddings": False}) for s in (deep, shallow)]
    predicted = activation_bytes(shapes[0], plan) - activation_bytes(shapes[1], plan)
    assert close(per_layer, predicted), f"{per_layer / 2**20:.2f} MiB per layer, formula {predicted / 2**20:.2f}"

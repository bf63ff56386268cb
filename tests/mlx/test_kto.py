"""The KTO module's own guarantees: the reference is the base model, and 4-bit bases train."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlx.core")


def _model(model_dir, quantize: bool):
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm

    from ktoforge.schemas import LoraSettings
    from ktoforge_mlx.lora import add_lora, lora_parameters

    model, _ = mlx_lm.load(str(model_dir))
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    base_logits = model(mx.array([[1, 3, 40, 41, 4, 50, 51, 2]]))
    mx.random.seed(0)
    add_lora(model, lora_parameters(model, LoraSettings(r=4, lora_alpha=8)))
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
    return model, base_logits


@pytest.mark.parametrize("quantize", [False, True])
def test_reference_is_the_base_and_lora_trains(tiny_model_dir, quantize: bool) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ktoforge_mlx.kto import KTOSettings, kto_loss, lora_disabled

    model, base_logits = _model(tiny_model_dir, quantize)
    ids = mx.array([[1, 3, 40, 41, 4, 50, 51, 2]])
    with lora_disabled(model):
        np.testing.assert_array_equal(np.array(model(ids)), np.array(base_logits))
    assert np.abs(np.array(model(ids)) - np.array(base_logits)).max() > 1e-4  # LoRA back on afterwards

    batch = {"input_ids": mx.array([[1, 3, 40, 4, 50, 51, 2], [1, 3, 41, 4, 52, 2, 0]]),
             "completion_mask": mx.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]]),
             "KL_input_ids": mx.array([[1, 3, 40, 4, 52, 2], [1, 3, 41, 4, 50, 51]]),
             "KL_completion_mask": mx.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]),
             "label": mx.array([True, False])}
    (loss, _), grads = nn.value_and_grad(model, lambda m, b: kto_loss(m, b, KTOSettings()))(model, batch)
    flat = dict(tree_flatten(grads))
    assert flat and all(k.endswith(("lora_a", "lora_b")) for k in flat)  # the (quantized) base stays frozen
    assert np.isfinite(loss.item()) and max(float(mx.abs(g).max()) for g in flat.values()) > 0


def test_lora_dropout_is_the_jobs_in_training_only(tiny_model_dir) -> None:
    """The job's lora_dropout reaches mlx-lm: two training forwards differ, eval and the reference see none,
    and with gradient checkpointing it is off (its recompute would draw other masks: wrong gradients)."""
    import mlx.core as mx
    import mlx_lm

    from ktoforge.schemas import LoraSettings
    from ktoforge_mlx.kto import lora_disabled
    from ktoforge_mlx.lora import add_lora, lora_parameters
    from ktoforge_mlx.trainer import enable_grad_checkpointing

    model, _ = mlx_lm.load(str(tiny_model_dir))
    params = lora_parameters(model, LoraSettings(r=4, lora_alpha=8, lora_dropout=0.5))
    assert params["dropout"] == 0.5
    add_lora(model, params)
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
    ids = mx.array([[1, 3, 40, 41, 4, 50, 51, 2]])
    model.train()
    assert np.abs(np.array(model(ids)) - np.array(model(ids))).max() > 1e-4
    with lora_disabled(model):
        np.testing.assert_array_equal(np.array(model(ids)), np.array(model(ids)))
    model.eval()
    np.testing.assert_array_equal(np.array(model(ids)), np.array(model(ids)))
    model.train()
    enable_grad_checkpointing(model)
    np.testing.assert_array_equal(np.array(model(ids)), np.array(model(ids)))

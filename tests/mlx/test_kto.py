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


def test_gradient_checkpointing_is_one_models_own(tiny_model_dir) -> None:
    """The Mac worker trains job after job in one process: checkpointing one job's model leaves every other model
    of its class, then and later, as it was (mlx-lm's helper patched the class: a later job without
    checkpointing was checkpointed too, its dropout on). The checkpointed model's loss and gradients are the
    plain model's."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    from mlx.utils import tree_flatten

    from ktoforge.schemas import LoraSettings
    from ktoforge_mlx.kto import KTOSettings, kto_loss
    from ktoforge_mlx.lora import add_lora, lora_parameters
    from ktoforge_mlx.trainer import enable_grad_checkpointing

    def model_with_lora() -> nn.Module:
        model, _ = mlx_lm.load(str(tiny_model_dir))
        mx.random.seed(0)
        add_lora(model, lora_parameters(model, LoraSettings(r=4, lora_alpha=8, lora_dropout=0.0)))
        for _, m in model.named_modules():
            if hasattr(m, "lora_b"):
                m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
        return model

    checkpointed, other = model_with_lora(), model_with_lora()
    block = type(other.layers[0])
    call = block.__call__
    enable_grad_checkpointing(checkpointed)
    enable_grad_checkpointing(checkpointed)  # twice: still one recompute, not nested
    assert all(type(b) is block for b in other.layers + model_with_lora().layers) and block.__call__ is call
    assert all(type(b).__bases__ == (block,) for b in checkpointed.layers)

    ids = mx.array([[1, 3, 40, 41, 4, 50, 51, 2], [1, 5, 42, 4, 60, 61, 62, 2]])
    mask = mx.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]])
    batch = {"input_ids": ids, "completion_mask": mask, "KL_input_ids": ids[::-1], "KL_completion_mask": mask[::-1],
             "label": mx.array([True, False])}
    results = [nn.value_and_grad(m, lambda m, b: kto_loss(m, b, KTOSettings())[0])(m, batch)
               for m in (checkpointed, other)]
    (loss_c, grads_c), (loss_o, grads_o) = results
    assert abs(loss_c.item() - loss_o.item()) < 1e-6
    for (name, g_c), (_, g_o) in zip(tree_flatten(grads_c), tree_flatten(grads_o), strict=True):
        assert mx.allclose(g_c, g_o, atol=1e-6).item(), name


def test_logits_at_completion_positions_are_the_full_logits(tiny_model_dir) -> None:
    """completion_logits runs the head on the gathered hidden states of the completion-predicting positions: the
    same numbers as the full forward there, also through the generic fallback (an architecture not known to be
    head(body(x)), here a wrapper module), and so the same loss, metrics and gradients."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ktoforge_mlx.kto import KTOSettings, completion_logits, kto_loss, split_head, with_positions

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def __call__(self, x: mx.array) -> mx.array:
            return self.inner(x)

    model, _ = _model(tiny_model_dir, quantize=False)
    model.eval()  # no LoRA dropout: each forward the same
    wrapped = Wrapped(model)
    assert split_head(model) is not None and split_head(wrapped) is None
    batch = with_positions({"input_ids": mx.array([[1, 3, 40, 4, 50, 51, 2], [1, 3, 41, 4, 52, 2, 0]]),
                            "completion_mask": mx.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]]),
                            "KL_input_ids": mx.array([[1, 3, 40, 4, 52, 2], [1, 3, 41, 4, 50, 51]]),
                            "KL_completion_mask": mx.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]),
                            "label": mx.array([True, False])})
    rows, cols, valid = np.array(batch["positions"])
    assert valid.sum() == 5 and len(valid) % 32 == 0
    assert [(r, c) for r, c, v in zip(rows, cols, valid) if v] == [(0, 3), (0, 4), (0, 5), (1, 3), (1, 4)]
    full = np.array(model(batch["input_ids"]))[rows, cols]
    np.testing.assert_allclose(np.array(completion_logits(model, batch["input_ids"], batch["positions"])), full,
                               rtol=1e-6, atol=1e-6)
    results = []
    for m in (model, wrapped):
        (loss, aux), grads = nn.value_and_grad(m, lambda m, b: kto_loss(m, b, KTOSettings()))(m, batch)
        results.append((loss.item(), {k: v.item() for k, v in aux.items()},
                        [np.array(g) for _, g in sorted(tree_flatten(grads))]))
    (loss_a, aux_a, grads_a), (loss_b, aux_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6) and aux_a == pytest.approx(aux_b, rel=1e-5, abs=1e-6)
    for a, b in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("width", [70, 96])
def test_chunked_gradient_free_forward_is_the_one_call_forward(tiny_model_dir, width: int) -> None:
    """The CPU's gradient-free forwards run in chunks through a KV cache (chunked_forward): the logits at the
    completion positions equal the one-call forward's, for a width that is a whole number of chunks and one
    that leaves a short last chunk, through the model's body (split_head) and through the full model alike;
    and sequence_logps, which the reference and KL passes use, chunks on the CPU."""
    import mlx.core as mx

    from ktoforge_mlx.kto import (CPU_CHUNK, chunked_forward, completion_logits, completion_positions,
                                  gradient_free_chunk, per_row, sequence_logps, token_logps)

    model, _ = _model(tiny_model_dir, quantize=False)
    model.eval()
    assert gradient_free_chunk() == CPU_CHUNK  # the tests run MLX on the CPU
    mx.random.seed(1)
    ids = mx.random.randint(0, model.args.vocab_size, (3, width))
    mask = mx.array([[0] * 10 + [1] * (width - 10), [0] * 30 + [1] * (width - 40) + [0] * 10,  # a padded row
                     [0] * 50 + [1] * (width - 50)])
    positions = completion_positions(mask)
    one_call = np.array(completion_logits(model, ids, positions))
    np.testing.assert_allclose(np.array(completion_logits(model, ids, positions, CPU_CHUNK)), one_call,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(chunked_forward(model, model, ids, CPU_CHUNK)), np.array(model(ids)),
                               rtol=1e-5, atol=1e-5)
    expected, _ = token_logps(mx.array(one_call), ids, positions)
    np.testing.assert_allclose(np.array(sequence_logps(model, ids, positions)),
                               np.array(per_row(expected, positions, 3)), rtol=1e-5, atol=1e-4)


def test_cpu_streams_step_is_the_sequential_step(tiny_model_dir, monkeypatch) -> None:
    """On the CPU the step runs its reference pass on a second stream, unchunked, while the first stream runs the
    policy's KL pass and the gradient pass (CompiledStep, streams): the same metrics, gradient norms and adapter
    weights as the sequential, unchunked step Metal runs, over steps of two micro-batches, LoRA dropout on (the
    same masks: the random state is drawn in the same order; a chunked pass would draw a mask per chunk)."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    from ktoforge.schemas import LoraSettings
    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.lora import add_lora, lora_parameters
    from ktoforge_mlx.trainer import CompiledStep, Plan, make_optimizer

    mx.random.seed(5)
    ids = mx.random.randint(3, 500, (4, 2, 70))
    completion = mx.array([[0] * 12 + [1] * 58, [0] * 20 + [1] * 40 + [0] * 10])
    batches = [{"input_ids": ids[i], "completion_mask": completion, "KL_input_ids": mx.roll(ids[i], 1, 0),
                "KL_completion_mask": mx.roll(completion, 1, 0), "label": mx.array([True, i % 2 == 0])}
               for i in range(4)]

    def train(streams: bool) -> tuple[list, dict]:
        model, _ = mlx_lm.load(str(tiny_model_dir))
        mx.random.seed(0)
        add_lora(model, lora_parameters(model, LoraSettings(r=4, lora_alpha=8, lora_dropout=0.1)))
        model.train()
        step = CompiledStep(model, make_optimizer(Plan.of(4, 2, 1, 2, learning_rate=1e-3)), KTOSettings(), 1.0,
                            streams=streams)
        assert (step.side is not None) == streams
        logs = [step(batches[i:i + 2], 1e-3) for i in (0, 2)]
        return logs, dict(tree_flatten(model.trainable_parameters()))

    two_logs, two_params = train(True)
    monkeypatch.setattr("ktoforge_mlx.kto.gradient_free_chunk", lambda: None)  # Metal's passes: one call each
    seq_logs, seq_params = train(False)
    assert seq_logs[1][1][0]["kl"] > 0  # the KL term, computed apart on the second stream path, is in play
    for (seq_norm, seq_metrics), (two_norm, two_metrics) in zip(seq_logs, two_logs, strict=True):
        assert two_norm == pytest.approx(seq_norm, rel=1e-5)
        for seq, two in zip(seq_metrics, two_metrics, strict=True):
            assert two == pytest.approx(seq, rel=1e-5, abs=1e-6)
    for name, value in seq_params.items():
        np.testing.assert_allclose(np.array(two_params[name]), np.array(value), rtol=1e-5, atol=1e-7)


def test_step_uses_two_streams_on_the_cpu_only(tiny_model_dir) -> None:
    """streams defaults to where MLX computes: the CPU (as the tests run) gets the second stream."""
    import mlx.core as mx
    import mlx_lm

    from ktoforge_mlx.kto import KTOSettings
    from ktoforge_mlx.trainer import CompiledStep, Plan, make_optimizer

    model, _ = mlx_lm.load(str(tiny_model_dir))
    assert mx.default_device().type == mx.cpu
    step = CompiledStep(model, make_optimizer(Plan.of(1, 1, 1, 1, learning_rate=1e-3)), KTOSettings(), 1.0)
    assert step.side is not None and step.side.device == mx.cpu

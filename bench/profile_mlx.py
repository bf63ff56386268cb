"""Where an MLX forward's time goes, on the tiny model and batch of bench/mlx_vs_torch.py: what
mlx_kto_gradient_free_share is made of, and why batching the gradient-free forwards cannot shrink it.

Prints, each the median of 20 compiled runs: the completion logps of 1, 4, 8 and 12 rows (ms a row: constant
means no per-call overhead is left to batch away), then one layer's parts on 4 rows (attention, its fused
scaled-dot-product attention with and without the causal mask, the MLP, the LM head on the completion positions,
the log-softmax's logsumexp), then the gradient-free forward of 8 rows in one call against the CPU's chunks
(kto.chunked_forward), the two alternated, median and minimum of 20 runs each.
Run: .venv/bin/python bench/profile_mlx.py [--out bench/profiles/mlx_forward.txt]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from harness import ROOT, publish

LENGTH, PROMPT = 192, 40  # the bench's max_length; a prompt of the reference rows' size under the tiny tokenizer


def median_ms(fn: Callable, *args) -> float:  # type: ignore[type-arg]
    """Median ms of 20 compiled runs of ``fn`` (after one to compile it)."""
    return alternated_ms([fn], *args)[0][0]


def alternated_ms(fns: list[Callable], *args, runs: int = 20) -> list[tuple[float, float]]:  # type: ignore[type-arg]
    """(median, minimum) ms of each function, compiled, the functions taking turns run after run: a change in the
    machine's load hits all of them alike."""
    import mlx.core as mx

    compiled = [mx.compile(fn) for fn in fns]
    for fn in compiled:
        mx.eval(fn(*args))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(compiled, times):
            start = time.perf_counter()
            mx.eval(fn(*args))
            out.append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t), min(t)) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the lines to this file")
    args = parser.parse_args()

    import mlx.core as mx
    import mlx_lm

    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path
    from ktoforge_mlx.kto import CPU_CHUNK, completion_logits, completion_positions, sequence_logps

    model, _ = mlx_lm.load(str(builtin_path(TINY_MISTRAL, ROOT / "var" / "models")))
    lines = [f"# MLX forward on the CPU, tiny model (hidden {model.args.hidden_size}, "
             f"{len(model.model.layers)} layers), {LENGTH} tokens a row; median of 20 compiled runs"]
    for rows in (1, 4, 8, 12):
        ids = mx.random.randint(0, model.args.vocab_size, (rows, LENGTH))
        mask = mx.concatenate([mx.zeros((rows, PROMPT)), mx.ones((rows, LENGTH - PROMPT))], axis=1)
        ms = median_ms(lambda i, p: sequence_logps(model, i, p), ids, completion_positions(mask))
        lines.append(f"completion logps, {rows:2d} rows: {ms:7.1f} ms, {ms / rows:5.1f} ms a row")
    rows, layer = 4, model.model.layers[0]
    heads, kv_heads = model.args.num_attention_heads, model.args.num_key_value_heads
    dim = model.args.hidden_size // heads
    x = mx.random.normal((rows, LENGTH, model.args.hidden_size))
    q = mx.random.normal((rows, heads, LENGTH, dim))
    k, v = mx.random.normal((rows, kv_heads, LENGTH, dim)), mx.random.normal((rows, kv_heads, LENGTH, dim))
    hidden = mx.random.normal((rows * (LENGTH - PROMPT), model.args.hidden_size))
    head = model.model.embed_tokens.as_linear if not hasattr(model, "lm_head") else model.lm_head
    parts = {
        "attention (norm, projections, sdpa)": (lambda h: layer.self_attn(layer.input_layernorm(h), mask="causal"), x),
        "  of which sdpa, causal mask": (lambda a, b, c: mx.fast.scaled_dot_product_attention(
            a, b, c, scale=dim ** -0.5, mask="causal"), q, k, v),
        "  sdpa, no mask (for comparison)": (lambda a, b, c: mx.fast.scaled_dot_product_attention(
            a, b, c, scale=dim ** -0.5), q, k, v),
        "mlp (norm, gate, up, down)": (lambda h: layer.mlp(layer.post_attention_layernorm(h)), x),
        "lm head, completion positions": (head, hidden),
        "logsumexp over the vocabulary": (lambda z: mx.logsumexp(z, axis=-1),
                                          mx.random.normal((hidden.shape[0], model.args.vocab_size))),
    }
    lines.append(f"one layer's parts on {rows} rows:")
    for name, (fn, *inputs) in parts.items():
        lines.append(f"  {name:38s} {median_ms(fn, *inputs):7.2f} ms")
    rows = 8
    ids = mx.random.randint(0, model.args.vocab_size, (rows, LENGTH))
    mask = mx.concatenate([mx.zeros((rows, PROMPT)), mx.ones((rows, LENGTH - PROMPT))], axis=1)
    (one_med, one_min), (chunk_med, chunk_min) = alternated_ms(
        [lambda i, p: completion_logits(model, i, p), lambda i, p: completion_logits(model, i, p, CPU_CHUNK)],
        ids, completion_positions(mask))
    lines.append(f"gradient-free forward, {rows} rows, median / min of 20 alternated runs:")
    lines.append(f"  one call                               {one_med:7.1f} / {one_min:5.1f} ms")
    lines.append(f"  chunks of {CPU_CHUNK} tokens (the CPU's)          {chunk_med:7.1f} / {chunk_min:5.1f} ms"
                 f"  ({chunk_med / one_med:.2f} / {chunk_min / one_min:.2f} of one call)")
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

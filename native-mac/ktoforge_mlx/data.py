"""Rows for the MLX trainer: the shared pipeline's rendering, tokenized and batched the way TRL does it.

TRL (1.14.2) tokenizes prompt and prompt+completion separately, takes the completion as what follows
their common prefix, drops rows whose prompt alone fills ``max_length``, pairs each completion with the
previous row's prompt inside each batch for the KL estimate (a +1 rotation), and right-pads with the
collator truncating each sequence to ``max_length``. Doing the same here is what makes both backends
train on identical token ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ktoforge.dataset import ChatTemplate, Example, load_examples, render_row
from ktoforge.dataset.split import split
from ktoforge.dataset.weights import resolve_weights
from ktoforge.schemas import Hyperparameters

Encode = Callable[[str], list[int]]


@dataclass
class Row:
    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    kl_completion_ids: list[int] | None = None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize(prompt_text: str, completion_text: str, label: bool, encode: Encode) -> Row:
    """TRL's tokenize_fn for one rendered row."""
    prompt_ids = encode(prompt_text)
    full_ids = encode(prompt_text + completion_text)
    n = common_prefix_length(prompt_ids, full_ids)
    return Row(prompt_ids[:n], full_ids[n:], label)


def add_kl_completions(rows: list[Row], batch_size: int) -> None:
    """(x_1, y_1) … (x_n, y_n) → KL pairs (x_1, y_n), (x_2, y_1), …, within each batch of ``batch_size``."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        rotated = [chunk[-1].completion_ids] + [r.completion_ids for r in chunk[:-1]]
        for row, kl_ids in zip(chunk, rotated):
            row.kl_completion_ids = kl_ids


def build_rows(examples: list[Example], template: ChatTemplate, encode: Encode, max_length: int,
               batch_size: int, with_kl: bool) -> list[Row]:
    rows = [tokenize(*render_row(e.prompt, e.completion, template), e.label, encode) for e in examples]
    rows = [r for r in rows if len(r.prompt_ids) < max_length]
    if with_kl:
        add_kl_completions(rows, batch_size)
    return rows


def _pad(seqs: list[list[int]], value: int) -> np.ndarray:
    out = np.full((len(seqs), max(len(s) for s in seqs)), value, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def collate(rows: list[Row], pad_id: int, max_length: int) -> dict[str, mx.array]:
    """TRL's DataCollatorForUnpairedPreference without the attention mask (right padding needs none); each
    row's length instead (``lengths``: its attention mask's sum, what TRL's ``num_tokens`` counts)."""
    batch: dict[str, mx.array] = {}
    sources = [("", lambda r: r.completion_ids)]
    if rows[0].kl_completion_ids is not None:
        sources.append(("KL_", lambda r: r.kl_completion_ids))
    for prefix, answer in sources:
        ids = [(r.prompt_ids + answer(r))[:max_length] for r in rows]
        masks = [([0] * len(r.prompt_ids) + [1] * len(answer(r)))[:max_length] for r in rows]
        batch[f"{prefix}input_ids"] = mx.array(_pad(ids, pad_id))
        batch[f"{prefix}completion_mask"] = mx.array(_pad(masks, 0))
    batch["label"] = mx.array(np.array([r.label for r in rows], dtype=np.bool_))
    batch["lengths"] = mx.array([min(len(r.prompt_ids) + len(r.completion_ids), max_length) for r in rows])
    return batch


def batches(rows: list[Row], batch_size: int) -> list[list[Row]]:
    """Consecutive batches in dataset order (TRL's sequential sampler; the last one may be short)."""
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def prepare(dataset_path: Path, template_dir: Path, encode: Encode,
            hp: Hyperparameters) -> tuple[list[Row], list[Row], dict[str, float]]:
    """(train rows, eval rows, resolved weights): the shared split and order, then TRL's tokenization."""
    template = ChatTemplate.from_dir(template_dir)
    train, held = split(load_examples(dataset_path), hp.eval_fraction, hp.seed)
    with_kl = hp.loss_type != "apo_zero_unpaired"
    bs = hp.per_device_train_batch_size
    return (build_rows(train, template, encode, hp.max_length, bs, with_kl),
            build_rows(held, template, encode, hp.max_length, bs, with_kl), resolve_weights(hp, train))

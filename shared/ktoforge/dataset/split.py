"""A deterministic, stratified train/eval split and shuffle, identical on both backends.

Rows are ordered by a hash of (seed, line number), not by a framework's RNG, so torch and MLX workers
(and any machine) see the same split and the same order.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from ktoforge.dataset.examples import Example

E = TypeVar("E", bound=Example)


def _key(seed: int, line: int) -> bytes:
    return hashlib.sha256(f"{seed}:{line}".encode()).digest()


def shuffle(examples: list[E], seed: int) -> list[E]:
    """A seed-determined order; KTO's KL pairs are batch neighbours, so label runs must be broken up."""
    return sorted(examples, key=lambda e: _key(seed, e.line))


def held_out(count: int, eval_fraction: float) -> int:
    """How many of one label's ``count`` rows ``split`` holds out for evaluation. Rounded per label, so the
    training rows are not ``rows - round(rows * eval_fraction)`` (746 + 254 rows at 0.0135: 987, not 986); the
    API's submit-time warnings count them with this too."""
    return round(count * eval_fraction)


def training_rows(desirable: int, undesirable: int, eval_fraction: float) -> int:
    """How many rows ``split`` leaves for training out of a dataset's desirable and undesirable rows."""
    return sum(n - held_out(n, eval_fraction) for n in (desirable, undesirable))


def split(examples: list[E], eval_fraction: float, seed: int) -> tuple[list[E], list[E]]:
    """(train, eval): each label keeps its share in both parts; both come out shuffled."""
    train: list[E] = []
    held: list[E] = []
    for label in (True, False):
        group = shuffle([e for e in examples if e.label is label], seed)
        n_eval = held_out(len(group), eval_fraction)
        held += group[:n_eval]
        train += group[n_eval:]
    return shuffle(train, seed), shuffle(held, seed)

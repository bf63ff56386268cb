"""Class weights for unbalanced KTO data.

The KTO paper (eq. 8) and TRL recommend desirable_weight·n_D / (undesirable_weight·n_U) in [1, 4/3].
We keep the weight of the larger class at 1 and raise the smaller class's weight so the ratio lands
in the middle of that range (7/6): weights never shrink the signal of the minority class.
"""

from __future__ import annotations

from collections.abc import Sequence

from ktoforge.dataset.examples import Example
from ktoforge.schemas import Hyperparameters

TARGET_RATIO = 7 / 6  # middle of [1, 4/3]


def recommended_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for these label counts."""
    if n_desirable == 0 or n_undesirable == 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if 1 <= ratio <= 4 / 3:
        return 1.0, 1.0
    if ratio > 4 / 3:  # too many desirable rows: weigh undesirable ones up
        return 1.0, round(ratio / TARGET_RATIO, 4)
    return round(TARGET_RATIO / ratio, 4), 1.0


def weight_ratio(w_d: float, w_u: float, n_desirable: int, n_undesirable: int) -> float:
    return (w_d * n_desirable) / (w_u * max(n_undesirable, 1))


def resolve_weights(hp: Hyperparameters, train: Sequence[Example]) -> dict[str, float]:
    """A job's weights for both backends: explicit values as given, 'auto' from the training rows' labels."""
    n_d = sum(e.label for e in train)
    auto_d, auto_u = recommended_weights(n_d, len(train) - n_d)
    return {
        "desirable_weight": auto_d if hp.desirable_weight == "auto" else float(hp.desirable_weight),
        "undesirable_weight": auto_u if hp.undesirable_weight == "auto" else float(hp.undesirable_weight),
    }

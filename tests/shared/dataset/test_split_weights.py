"""The shared split and weights: deterministic, stratified, identical for both backends."""

from __future__ import annotations

import pytest

from ktoforge.dataset import load_examples
from ktoforge.dataset.split import split
from ktoforge.dataset.weights import recommended_weights, resolve_weights, weight_ratio
from ktoforge.schemas import Hyperparameters


def test_split_is_stratified_deterministic_and_disjoint(reference_dataset):
    examples = load_examples(reference_dataset)
    train, held = split(examples, 0.1, seed=7)
    assert sorted(e.line for e in train + held) == list(range(1, 1001))
    assert (sum(e.label for e in held), len(held) - sum(e.label for e in held)) == (75, 25)  # 10% of 746 / 254
    again_train, again_held = split(load_examples(reference_dataset), 0.1, seed=7)
    assert [e.line for e in again_train] == [e.line for e in train] and [e.line for e in again_held] == \
        [e.line for e in held]
    assert [e.line for e in split(examples, 0.1, seed=8)[1]] != [e.line for e in held]


def test_both_workers_prepare_from_the_same_split():
    import ktoforge_mlx.data as mlx_data
    import ktoforge_worker.data as torch_data

    assert torch_data.split is split and mlx_data.split is split
    assert torch_data.resolve_weights is resolve_weights and mlx_data.resolve_weights is resolve_weights


@pytest.mark.parametrize("n_d, n_u", [(746, 254), (254, 746), (100, 100), (120, 100), (1000, 1), (1, 5)])
def test_recommended_weights_land_in_the_paper_range(n_d, n_u):
    w_d, w_u = recommended_weights(n_d, n_u)
    assert 1 <= weight_ratio(w_d, w_u, n_d, n_u) <= 4 / 3 + 1e-9
    assert min(w_d, w_u) == 1.0


def test_auto_weights_resolve_from_training_rows_explicit_ones_are_kept(reference_dataset):
    examples = load_examples(reference_dataset)
    auto = resolve_weights(Hyperparameters(), examples)
    assert auto == {"desirable_weight": 1.0, "undesirable_weight": recommended_weights(746, 254)[1]}
    fixed = resolve_weights(Hyperparameters(desirable_weight=0.5, undesirable_weight=2), examples)
    assert fixed == {"desirable_weight": 0.5, "undesirable_weight": 2.0}

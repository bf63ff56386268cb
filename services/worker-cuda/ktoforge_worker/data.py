"""The shared pipeline's rows, rendered with the model's chat template, as TRL datasets."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ktoforge.dataset import ChatTemplate, Example, load_examples, render_row
from ktoforge.dataset.split import split
from ktoforge.dataset.weights import recommended_weights
from ktoforge.schemas import Hyperparameters


def to_dataset(examples: list[Example], template: ChatTemplate) -> Dataset:
    """Standard (text) prompt/completion columns: the completion already ends with EOS, TRL adds none."""
    rows = {"prompt": [], "completion": [], "label": []}
    for ex in examples:
        prompt, completion = render_row(ex.prompt, ex.completion, template)
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
        rows["label"].append(ex.label)
    return Dataset.from_dict(rows)


def prepare(dataset_path: Path, template_dir: Path, hp: Hyperparameters) -> tuple[Dataset, Dataset | None, dict]:
    """(train, eval or None, resolved class weights)."""
    template = ChatTemplate.from_dir(template_dir)
    train, held = split(load_examples(dataset_path), hp.eval_fraction, hp.seed)
    n_d = sum(e.label for e in train)
    auto_d, auto_u = recommended_weights(n_d, len(train) - n_d)
    weights = {
        "desirable_weight": auto_d if hp.desirable_weight == "auto" else float(hp.desirable_weight),
        "undesirable_weight": auto_u if hp.undesirable_weight == "auto" else float(hp.undesirable_weight),
    }
    return to_dataset(train, template), (to_dataset(held, template) if held else None), weights

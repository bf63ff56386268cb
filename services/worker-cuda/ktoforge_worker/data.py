"""The shared pipeline's rows as TRL datasets, in TRL's conversational format.

Conversational rows make TRL render them with the model's own chat template and tokenize without adding
special tokens (text rows get a second BOS from tokenizers that add one, such as Mistral's). The turns are
normalised by the shared pipeline (``template_messages``), the same function the MLX worker renders
through, so both backends train on the same text (tests compare them).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ktoforge.dataset import ChatTemplate, Example, load_examples, template_messages
from ktoforge.dataset.split import split
from ktoforge.dataset.weights import resolve_weights
from ktoforge.schemas import Hyperparameters


def to_dataset(examples: list[Example], template: ChatTemplate) -> Dataset:
    rows: dict[str, list] = {"prompt": [], "completion": [], "label": []}
    for ex in examples:
        prompt, completion = template_messages(ex.prompt, ex.completion, template)
        rows["prompt"].append(prompt)
        rows["completion"].append([completion])
        rows["label"].append(ex.label)
    return Dataset.from_dict(rows)


def prepare(dataset_path: Path, template_dir: Path, hp: Hyperparameters) -> tuple[Dataset, Dataset | None, dict]:
    """(train, eval or None, resolved class weights)."""
    template = ChatTemplate.from_dir(template_dir)
    train, held = split(load_examples(dataset_path), hp.eval_fraction, hp.seed)
    return (to_dataset(train, template), to_dataset(held, template) if held else None,
            resolve_weights(hp, train))

"""The reference pass, computed per step or once up front: step time with TRL's `precompute_ref_log_probs`
on over off, on the torch path (KTOTrainer + LoRA on the builtin tiny model, CPU), same data and seed.

With it on, TRL runs the reference model over the whole training set before the first step and each step
then skips the reference forward passes; the one-off cost pays back only over many steps (full epochs).
Prints `precompute_ref_step_ratio` (median step time on / off), precompute_ref_setup_s (the one-off pass)
and the two medians.
Run: .venv/bin/python bench/precompute_ref.py [--steps 30] [--rows 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import MODELS, emit, median, small_dataset


def timed_training(dataset: Path, out: Path, steps: int, precompute: bool) -> tuple[float, float]:
    """(median step time, seconds from train() to the first step) for one KTOTrainer run."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import KTOConfig, KTOTrainer

    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path
    from ktoforge.dataset import ChatTemplate, load_examples
    from ktoforge_worker.data import to_dataset

    model_dir = builtin_path(TINY_MISTRAL, MODELS)
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append(time.perf_counter())

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = to_dataset(load_examples(dataset), ChatTemplate.from_dir(model_dir))
    args = KTOConfig(output_dir=str(out), per_device_train_batch_size=2, max_steps=steps, max_length=192,
                     learning_rate=1e-4, save_strategy="no", report_to=[], use_cpu=True, logging_steps=steps,
                     precompute_ref_log_probs=precompute, seed=0, dataloader_num_workers=0)
    trainer = KTOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"),
                         callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    marks.append(time.perf_counter())
    steps_s = [b - a for a, b in zip(marks[2:], marks[3:])]  # two warm-up steps left out
    return median(steps_s), marks[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = small_dataset(Path(tmp), args.rows)
        off, _ = timed_training(dataset, Path(tmp) / "off", args.steps, False)
        on, setup = timed_training(dataset, Path(tmp) / "on", args.steps, True)
    emit("precompute_ref_step_off_s", off, ".4f")
    emit("precompute_ref_step_on_s", on, ".4f")
    emit("precompute_ref_setup_s", setup, ".2f")
    emit("precompute_ref_step_ratio", on / off)


if __name__ == "__main__":
    main()

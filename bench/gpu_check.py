"""Does a Mistral-7B KTO job fit an 8 GB card (RTX 3070)? The worker's Unsloth path against plain
transformers + peft + bitsandbytes, each in its own process capped at 8 GiB of GPU memory.

A Mistral-7B-shaped model (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocab 32768) with
random weights (no hub: written once to var/gpu-check/, shard by shard), loaded in 4-bit, LoRA r16 on all seven
projections, TRL's KTOTrainer at max_length 1024 and per-device batch 2, rows longer than 1024 tokens, a few
steps. The Unsloth run goes through the worker's own loading and KTOConfig (ktoforge_worker); the plain run
loads with a BitsAndBytesConfig (NF4) and the same KTOConfig. The cap is
``torch.cuda.set_per_process_memory_fraction`` (the CUDA context, ~0.3-0.5 GiB, lies outside it and is printed).
Random weights: losses mean nothing; memory and time are those of the shape.

Prints ``name value`` lines: gpu_peak_vram_gb (Unsloth run, peak reserved, GiB), gpu_peak_vram_gb_plain,
unsloth_step_s and plain_step_s (median step after the first), unsloth_speedup (plain step time over
Unsloth's), and gpu_oom_<stack> 1 where a run did not fit the cap.

On the GPU machine (it reaches no package index): first, here, ``.venv/bin/python bench/gpu_wheels.py`` puts
the wheels this needs beyond torch and transformers into var/gpu-wheels/; there, one command:
    pip install --no-deps var/gpu-wheels/*.whl && python bench/gpu_check.py
Without a GPU: ``python bench/gpu_check.py --dry-run`` checks the shape (meta device), the LoRA size, the rows'
length and the checkpoint writer (a scaled-down copy loaded back), and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for src in ("shared", "services/worker-cuda"):  # the worker's code, installed or not
    sys.path.insert(0, str(ROOT / src))

MISTRAL_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "vocab_size": 32768, "head_dim": 128, "max_position_embeddings": 32768,
              "rope_theta": 1e6, "sliding_window": None, "tie_word_embeddings": False, "rms_norm_eps": 1e-5}
MAX_LENGTH, BATCH, RANK = 1024, 2, 16
GIB = 2**30
SHARD_BYTES = 2 * GIB


def mistral_config(**overrides: Any) -> Any:
    from transformers import MistralConfig

    return MistralConfig(**{**MISTRAL_7B, **overrides}, dtype="bfloat16")


def write_random_checkpoint(config: Any, out: Path, seed: int = 0) -> None:
    """Safetensors shards of random bf16 weights for ``config`` (norms 1, the rest N(0, 0.02)), one shard in
    memory at a time, plus the builtin model's tokenizer; names and shapes from the model built on meta."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    shard: dict[str, Any] = {}
    weight_map: dict[str, str] = {}
    size = 0

    def flush() -> None:
        nonlocal shard, size
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    for key, shape in shapes.items():
        tensor = (torch.ones(shape) if "norm" in key else torch.randn(shape, generator=gen) * 0.02).bfloat16()
        shard[key] = tensor
        size += tensor.numel() * 2
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    total = sum(s.numel() for s in shapes.values()) * 2
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    config.save_pretrained(out)
    tokenizer_dir = builtin_path(TINY_MISTRAL, ROOT / "var" / "models")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)


def kto_rows(tokenizer: Any, n: int, seed: int = 0) -> Any:
    """n KTO rows (labels alternating): prompts well under MAX_LENGTH tokens, prompt + completion over it, so
    every row is cut to MAX_LENGTH (TRL keeps the start) with completion tokens left to train on."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(500)]

    def text(n_words: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n_words))

    rows = {"prompt": [text(60) for _ in range(n)], "completion": [text(150) for _ in range(n)],
            "label": [i % 2 == 0 for i in range(n)]}
    return Dataset.from_dict(rows)


def job_for(model_dir: Path, steps: int) -> Any:
    from ktoforge.schemas import Hyperparameters, Job, LoraSettings

    hp = Hyperparameters(max_length=MAX_LENGTH, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
                         max_steps=steps, save_steps=steps + 1, logging_steps=1, gradient_checkpointing=True)
    return Job(id="0" * 32, status="running", dataset_id="0" * 64, backend="cuda", model=str(model_dir),
               hyperparameters=hp, lora=LoraSettings(r=RANK, lora_alpha=RANK), created_at=0, updated_at=0)


def worker_kto_args(job: Any, work: Path) -> Any:
    """The KTOConfig the worker builds for this job (its own function; only the job and a folder are needed)."""
    from ktoforge_worker.train import kto_config

    ctx = SimpleNamespace(job=job, checkpoint_dir=work / "checkpoints")
    return kto_config(ctx, {"desirable_weight": 1.0, "undesirable_weight": 1.0}, has_eval=False)


def load_plain(model_dir: Path, job: Any) -> tuple[Any, Any, Any]:
    """transformers + bitsandbytes NF4 + a peft LoRA config for TRL: what one would write without Unsloth."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map={"": 0}, trust_remote_code=False)
    lora = job.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    return model, AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False), config


def run_stack(stack: str, model_dir: Path, steps: int, cap_gb: float) -> dict[str, Any]:
    """One stack's KTO steps in this process (a fresh one per stack: Unsloth patches what it imports)."""
    from ktoforge.settings import Settings
    from ktoforge_worker.loading import import_unsloth_first, load

    work = Path(tempfile.mkdtemp(prefix=f"gpu-check-{stack}-"))
    settings = Settings(_env_file=None, work_dir=work)
    if stack == "unsloth" and not import_unsloth_first(settings):
        raise SystemExit("Unsloth is not importable or sees no GPU")
    import torch
    from transformers import TrainerCallback
    from trl import KTOTrainer

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * GIB / total))
    free, _ = torch.cuda.mem_get_info()
    context_gb = (total - free - torch.cuda.memory_reserved()) / GIB
    job = job_for(model_dir, steps)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    oom = False
    try:
        if stack == "unsloth":
            model, tokenizer, peft_config = load(str(model_dir), job, settings, use_unsloth=True)
        else:
            model, tokenizer, peft_config = load_plain(model_dir, job)
        trainer = KTOTrainer(model=model, args=worker_kto_args(job, work),
                             train_dataset=kto_rows(tokenizer, BATCH * steps * 2),
                             processing_class=tokenizer, peft_config=peft_config, callbacks=[StepTimer()])
        trainer.train()
    except torch.cuda.OutOfMemoryError:
        oom = True
    return {"stack": stack, "oom": oom, "step_s": times, "context_gb": context_gb,
            "peak_reserved_gb": torch.cuda.max_memory_reserved() / GIB,
            "peak_allocated_gb": torch.cuda.max_memory_allocated() / GIB, "device": torch.cuda.get_device_name(0)}


def measure(args: argparse.Namespace) -> None:
    """Writes the random checkpoint once, runs each stack in a child process, prints the figures."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_check.py needs a CUDA device (here: --dry-run); nothing was measured")
    model_dir = args.work / "mistral-7b-random"
    if not (model_dir / "model.safetensors.index.json").exists():
        write_random_checkpoint(mistral_config(), model_dir)
    results = {}
    for stack in ("unsloth", "plain"):
        cmd = [sys.executable, __file__, "--stack", stack, "--model-dir", str(model_dir), "--steps", str(args.steps),
               "--cap-gb", str(args.cap_gb)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"{stack} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        results[stack] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"# {results['unsloth']['device']}, cap {args.cap_gb:g} GiB, max_length {MAX_LENGTH}, batch {BATCH}, "
          f"LoRA r{RANK}, {args.steps} steps")
    print(f"gpu_context_gb {results['unsloth']['context_gb']:.2f}")
    for stack, suffix in (("unsloth", ""), ("plain", "_plain")):
        r = results[stack]
        print(f"gpu_peak_vram_gb{suffix} {r['peak_reserved_gb']:.2f}")
        print(f"gpu_peak_allocated_gb{suffix} {r['peak_allocated_gb']:.2f}")
        if r["oom"]:
            print(f"gpu_oom_{stack} 1")
        if len(r["step_s"]) > 1:
            print(f"{stack}_step_s {statistics.median(r['step_s'][1:]):.3f}")
    if all(len(results[s]["step_s"]) > 1 for s in results):
        ratio = statistics.median(results["plain"]["step_s"][1:]) / statistics.median(results["unsloth"]["step_s"][1:])
        print(f"unsloth_speedup {ratio:.2f}")


def dry_run(steps: int) -> None:
    """The check's inputs without a GPU: shape, LoRA size, row lengths, and a loadable checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ktoforge.schemas import LORA_TARGETS

    config = mistral_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    print(f"dry_run_params {sum(p.numel() for p in model.parameters())}")
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=RANK, target_modules=LORA_TARGETS,
                                                  task_type="CAUSAL_LM"))
    print(f"dry_run_lora_params {sum(p.numel() for p in peft_model.parameters() if p.requires_grad)}")
    with tempfile.TemporaryDirectory() as tmp:
        small = mistral_config(hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=16)
        write_random_checkpoint(small, Path(tmp))
        loaded, info = AutoModelForCausalLM.from_pretrained(tmp, output_loading_info=True, trust_remote_code=False)
        missing = sum(len(v) for v in info.values() if isinstance(v, (list, set)))
        print(f"dry_run_checkpoint_loading_issues {missing}")
        tokenizer = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
        rows = kto_rows(tokenizer, BATCH * steps * 2)
        lengths = [len(tokenizer(p + " " + c)["input_ids"]) for p, c in zip(rows["prompt"], rows["completion"])]
        print(f"dry_run_rows {len(lengths)}")
        print(f"dry_run_min_row_tokens {min(lengths)}")
        print(f"dry_run_max_prompt_tokens {max(len(tokenizer(p)['input_ids']) for p in rows['prompt'])}")
        args = worker_kto_args(job_for(Path(tmp), steps), Path(tmp))
        print(f"dry_run_kto {args.max_length} {args.per_device_train_batch_size} {args.max_steps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="check the inputs on the CPU; measure nothing")
    parser.add_argument("--steps", type=int, default=6, help="KTO steps per stack (the first is warm-up)")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="GPU memory cap per process, GiB (RTX 3070: 8)")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "gpu-check", help="random checkpoint goes here")
    parser.add_argument("--stack", choices=["unsloth", "plain"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2 or not 0 < args.cap_gb <= 1024:
        parser.error("--steps must be >= 2 (the first is warm-up) and --cap-gb in (0, 1024]")
    if args.dry_run:
        dry_run(args.steps)
    elif args.stack:
        print(json.dumps(run_stack(args.stack, args.model_dir, args.steps, args.cap_gb)))
    else:
        measure(args)


if __name__ == "__main__":
    main()

"""Measure the memory terms of one real KTO step on CPU (run as a child: ``python -m tests.shared.fit_probe``).

A child of its own, started with MALLOC_MMAP_THRESHOLD_ low, so that every tensor is its own mapping and the
kernel's counters follow torch's allocations: VmRSS for what stays (weights, adapter, gradients, optimizer
state), VmHWM (reset through /proc/self/clear_refs) for the peak of the step. Activations are counted exactly
by autograd's saved-tensor hooks (parameters excluded), split from the logits-shaped tensors by their last
dimension. The step is TRL's own KTOTrainer.compute_loss and a backward, on a builtin-shaped Mistral.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss() -> int:
    return _status("VmRSS:")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def saved_by_autograd(model: Any, vocab: int) -> tuple[dict[str, int], Any]:
    """A context manager counting bytes autograd saves, by kind ('activations' / 'logits'), params excluded."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[str, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = ("logits" if t.dim() and t.shape[-1] == vocab else "activations",
                                        storage.nbytes())
        return t

    totals: dict[str, int] = {"activations": 0, "logits": 0}

    class Ctx(torch.autograd.graph.saved_tensors_hooks):
        def __init__(self) -> None:
            super().__init__(pack, lambda t: t)

        def __exit__(self, *exc: Any) -> None:
            super().__exit__(*exc)
            for kind, size in seen.values():
                totals[kind] += size

    return totals, Ctx()


def build(shape: dict[str, int], plan: dict[str, Any], tmp: Path) -> tuple[Any, dict[str, int]]:
    """(trainer, measured weights/adapter bytes): model from a builtin-shaped config, LoRA, TRL's KTOTrainer."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    from ktoforge.builtin_model import CONFIG, TINY_MISTRAL, builtin_path
    from tests.conftest import ROOT

    config = AutoConfig.for_model(**{**{k: v for k, v in CONFIG.items() if k != "architectures"}, **shape})
    tokenizer = AutoTokenizer.from_pretrained(builtin_path(TINY_MISTRAL, ROOT / "var" / "models"))
    r0 = rss()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    r1 = rss()
    model = get_peft_model(model, LoraConfig(r=plan["r"], lora_alpha=16, lora_dropout=plan["lora_dropout"],
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    r2 = rss()
    rows = Dataset.from_dict({"prompt": ["hi"] * 4, "completion": ["there"] * 4, "label": [True, False] * 2})
    args = KTOConfig(output_dir=str(tmp), per_device_train_batch_size=plan["batch"], max_length=plan["max_length"],
                     use_cpu=True, report_to=[], dataset_num_proc=None, remove_unused_columns=False, max_steps=1,
                     disable_dropout=plan["lora_dropout"] == 0)  # TRL would zero the LoRA dropout the plan asks for
    trainer = KTOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    if plan["gradient_checkpointing"]:
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer.model.enable_input_require_grads()
    trainer.model.train()
    return trainer, {"weights": r1 - r0, "adapter_weights": r2 - r1}


def step(trainer: Any, vocab: int, plan: dict[str, Any]) -> dict[str, int]:
    """One compute_loss + backward + AdamW step: the peak above what was there, and what each part left."""
    import torch

    b, s = plan["batch"], plan["max_length"]
    ids = torch.randint(5, 500, (b, s))
    half = torch.cat([torch.zeros(b, s // 2), torch.ones(b, s - s // 2)], dim=1).long()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": half,
             "KL_input_ids": ids.roll(1, 0), "KL_attention_mask": torch.ones_like(ids), "KL_completion_mask": half,
             "label": torch.tensor([i % 2 == 0 for i in range(b)])}
    model = trainer.model
    saved, ctx = saved_by_autograd(model, vocab)
    before = rss()
    reset_peak()
    with ctx:
        loss = trainer.compute_loss(model, batch)
    loss.backward()
    peak = _status("VmHWM:") - before
    del loss
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradients = sum(p.grad.untyped_storage().nbytes() for p in trainable)  # exact: RSS adds CPU kernel scratch
    after_backward = rss()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    optimizer.step()  # creates its state (kept alive by ``optimizer`` until measured)
    return {"step_peak": peak, "gradients": gradients, "optimizer": rss() - after_backward, **saved}


def main() -> None:
    import torch

    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        warm, _ = build({**spec["shape"], "num_hidden_layers": 1}, {**spec["plan"], "max_length": 32}, Path(tmp))
        step(warm, spec["shape"]["vocab_size"], {**spec["plan"], "max_length": 32})  # kernels, thread pools
        del warm
        trainer, loaded = build(spec["shape"], spec["plan"], Path(tmp))
        measured = {**loaded, **step(trainer, spec["shape"]["vocab_size"], spec["plan"])}
    print(json.dumps(measured))


if __name__ == "__main__":
    main()

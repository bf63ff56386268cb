"""A stand-in ``unsloth`` package for a CPU test process: records what the real one cares about at import.

Unsloth patches TRL (``trl.KTOTrainer``/``trl.KTOConfig`` rebound to its own classes) and warns when trl,
transformers or peft were imported before it. This stand-in does what matters for those checks and no more:
it records which of trl/transformers/peft/datasets were already in ``sys.modules`` and the
``UNSLOTH_DATASET_NUM_PROC`` it saw, rebinds trl's KTO classes (its KTOConfig replaces
``dataset_num_proc=None`` the way Unsloth's does, honouring the variable), and loads the model with
transformers + peft on the CPU. The test process pretends CUDA exists until this is imported (the worker's
"will use Unsloth" decision); importing it undoes that, so training then runs on the CPU.
"""

from __future__ import annotations

SOURCE = '''
import json, os, sys

RECORD = os.environ["STANDIN_UNSLOTH_RECORD"]


def _record(**data):
    old = json.loads(open(RECORD).read()) if os.path.exists(RECORD) else {}
    open(RECORD, "w").write(json.dumps({**old, **data}))


_record(imported_before=sorted(m for m in ("trl", "transformers", "peft", "datasets") if m in sys.modules),
        dataset_num_proc_env=os.environ.get("UNSLOTH_DATASET_NUM_PROC"),
        compile_location=os.environ.get("UNSLOTH_COMPILE_LOCATION"))

import torch  # noqa: E402

torch.cuda.is_available = torch.cuda.__dict__["_standin_real_is_available"]

import trl  # noqa: E402


def _num_proc(requested):
    """Unsloth's rule: the environment variable wins (<= 1: in-process), else None becomes 2-8 workers."""
    raw = os.environ.get("UNSLOTH_DATASET_NUM_PROC")
    if raw is not None:
        return None if int(raw) <= 1 else int(raw)
    return 4 if requested is None else requested


class UnslothKTOConfig(trl.KTOConfig):
    def __init__(self, *args, dataset_num_proc=None, **kwargs):
        super().__init__(*args, dataset_num_proc=_num_proc(dataset_num_proc), **kwargs)


class UnslothKTOTrainer(trl.KTOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _record(trainer=type(self).__name__, config=type(self.args).__name__,
                dataset_num_proc=self.args.dataset_num_proc)


trl.KTOConfig, trl.KTOTrainer = UnslothKTOConfig, UnslothKTOTrainer


class FastLanguageModel:
    @staticmethod
    def from_pretrained(model_name, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _record(from_pretrained={k: v for k, v in kwargs.items() if k != "token"})
        tok = AutoTokenizer.from_pretrained(model_name, trust_remote_code=False)
        return AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32, trust_remote_code=False), tok

    @staticmethod
    def get_peft_model(model, r, lora_alpha, lora_dropout, target_modules, bias, random_state, **kwargs):
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                target_modules=target_modules, bias=bias, task_type="CAUSAL_LM"))
'''

# Run in the worker subprocess before the job: CUDA "available" until the stand-in is imported.
PRELUDE = '''
import torch
torch.cuda._standin_real_is_available = torch.cuda.is_available
torch.cuda.is_available = lambda: True
'''

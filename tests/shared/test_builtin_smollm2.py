"""builtin:smollm2-135m: our numpy conversion of the packaged GGUF equals transformers' own GGUF loader, and
the model answers like the instruct model it is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ktoforge.builtin_smollm2 import SMOLLM2, gguf_path, unpermute
from ktoforge.models import check_model
from tests.smollm2 import smollm2_dir

torch = pytest.importorskip("torch")


def test_it_is_an_accepted_builtin(kf_env):
    assert check_model(SMOLLM2) == "builtin"
    config = json.loads((smollm2_dir() / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["tie_word_embeddings"]) == ("llama", 30, True)
    tokenizer_config = json.loads((smollm2_dir() / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tokenizer_config["chat_template"]


def test_unpermute_inverts_llama_cpp_permute():
    """llama.cpp's converter: reshape(n_head, 2, half, in).swapaxes(1, 2); ours must undo exactly that."""
    w = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    n_head = 3
    permuted = w.reshape(n_head, 2, 12 // n_head // 2, 5).swapaxes(1, 2).reshape(w.shape)
    assert np.array_equal(unpermute(permuted, n_head), w)


def test_same_tokens_and_logits_as_transformers_gguf_loader():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    ref_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32)
    text = 'tool_call: vaultManager_createFolder\narguments: {"path": "Projects/2024"}<|im_end|>\n'
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref(**ids).logits)


def test_answers_sensibly_through_its_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    plain = tok("The capital of France is", return_tensors="pt")
    assert "Paris" in tok.decode(model.generate(**plain, max_new_tokens=4, do_sample=False)[0])

"""The merged model gives the logits of base + adapter (fp32 tolerance); the Modelfile names both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ktoforge.export import ExportError, chat_family, job_modelfile, merge, modelfile_text

torch = pytest.importorskip("torch")

PROMPT = "tool_call: vaultManager_createFolder\narguments: {\"path\": \"Projects\"}"


def peft_adapter(base_dir: Path, out: Path) -> object:
    """A PEFT LoRA on the tiny model with non-zero B (a fresh LoRA is a no-op), saved to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            lora_dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(str(out))
    return model.eval()


def logits(model: object, model_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model_dir))(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_merged_torch_adapter_equals_base_plus_adapter(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    peft_model = peft_adapter(tiny_model_dir, tmp_path / "adapter")
    merged_dir = merge(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)
    expected, got = logits(peft_model, tiny_model_dir), logits(merged, merged_dir)
    base = logits(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), tiny_model_dir)
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the output: the check below means something
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (merged_dir / "tokenizer.json").is_file()


def test_a_non_lora_adapter_is_refused(tiny_model_dir: Path, tmp_path: Path):
    peft_adapter(tiny_model_dir, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ExportError, match="only plain LoRA"):
        merge(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")


def test_modelfile_has_base_adapter_template_and_stops(tiny_model_dir: Path, tmp_path: Path):
    text = job_modelfile("mistralai/Mistral-7B-Instruct-v0.3", tiny_model_dir)
    assert "FROM ./base\nADAPTER ./adapter\n" in text and "mistralai/Mistral-7B-Instruct-v0.3" in text
    assert "[INST] {{ .Prompt }}[/INST]" in text
    assert all(f'PARAMETER stop "{s}"' in text for s in ("[INST]", "[/INST]", "</s>"))
    smollm2 = tmp_path / "smollm2"
    smollm2.mkdir()
    (smollm2 / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (smollm2 / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}")
    assert 'PARAMETER stop "<|im_end|>"' in job_modelfile("builtin:smollm2-135m", smollm2)  # template in .jinja
    chatml = modelfile_text("./base", "./adapter", chat_family("<|im_start|>user"))
    assert 'PARAMETER stop "<|im_end|>"' in chatml and "<|im_start|>assistant" in chatml

"""An MLX job's adapter, converted to PEFT (as the Mac worker ships it) and merged by the exporter, gives in
transformers the logits mlx-lm gives for base + adapter; mlx-lm's own fuse reads the same adapter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ktoforge.export import merge

mx = pytest.importorskip("mlx.core")
torch = pytest.importorskip("torch")

PROMPT = "tool_call: vaultManager_createFolder\narguments: {\"path\": \"Projects\"}"


def mlx_adapter(base_dir: Path, out: Path) -> tuple[object, object]:
    """mlx-lm model + LoRA with non-zero lora_b, saved as mlx-lm adapter and converted to PEFT in ``out``."""
    import mlx_lm
    from mlx.utils import tree_flatten

    from ktoforge.schemas import LoraSettings
    from ktoforge_mlx.convert import to_peft
    from ktoforge_mlx.lora import add_lora, lora_parameters, save_adapter

    model, tokenizer = mlx_lm.load(str(base_dir))
    params = lora_parameters(model, LoraSettings(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    mx.random.seed(0)
    add_lora(model, params)
    update = [(k, mx.random.normal(v.shape) * 0.5) for k, v in tree_flatten(model.trainable_parameters())
              if k.endswith("lora_b")]
    model.load_weights(update, strict=False)
    model.eval()  # LoRA dropout (the job's default 0.05) is for training; the comparisons are inference
    save_adapter(model, params, out / "mlx")
    to_peft(out / "mlx", out / "peft", str(base_dir))
    return model, tokenizer


def test_merged_mlx_adapter_equals_mlx_base_plus_adapter(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = mlx_adapter(tiny_model_dir, tmp_path)
    ids = tokenizer.encode(PROMPT)
    expected = np.array(model(mx.array([ids])).astype(mx.float32))
    merged_dir = merge(tiny_model_dir, tmp_path / "peft", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)
    with torch.no_grad():
        got = merged(torch.tensor([ids])).logits.numpy()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        assert np.abs(base(torch.tensor([ids])).logits.numpy() - expected).max() > 1e-3  # the adapter matters
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_mlx_lm_fuse_reads_the_job_adapter(tiny_model_dir: Path, tmp_path: Path):
    mlx_adapter(tiny_model_dir, tmp_path)
    subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(tiny_model_dir), "--adapter-path",
                    str(tmp_path / "mlx"), "--save-path", str(tmp_path / "fused")], check=True, capture_output=True)
    assert (tmp_path / "fused" / "config.json").is_file() and list((tmp_path / "fused").glob("*.safetensors"))


def test_export_mlx_format_fuses_a_jobs_adapter_tar(tiny_model_dir: Path, tmp_path: Path):
    """``ktoforge job export --format mlx`` on an MLX job's artifacts: the fused model answers as base + adapter."""
    import tarfile

    import mlx_lm

    from ktoforge.cli.export import write_mlx

    model, tokenizer = mlx_adapter(tiny_model_dir, tmp_path)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with tarfile.open(job_dir / "mlx_adapter.tar", "w") as tar:
        for name in ("adapters.safetensors", "adapter_config.json"):
            tar.add(tmp_path / "mlx" / name, arcname=name)
    fused_dir = write_mlx(tiny_model_dir, job_dir, tmp_path / "out")
    fused, _ = mlx_lm.load(str(fused_dir))
    ids = mx.array([tokenizer.encode(PROMPT)])
    np.testing.assert_allclose(np.array(fused(ids)), np.array(model(ids)), rtol=1e-4, atol=1e-4)

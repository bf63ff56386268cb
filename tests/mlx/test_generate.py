"""MLX evaluation generation: base and adapter columns from mlx-lm, with the job's mlx-lm adapter or one made
back from a torch job's PEFT adapter (same outputs either way)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ktoforge.evaluation.prompts import EvalPrompt
from tests.mlx.test_export import mlx_adapter

pytest.importorskip("mlx_lm")

PROMPTS = [EvalPrompt(id="a", question="Create a folder named Projects", expected_tools=["x"]),
           EvalPrompt(id="b", question="Hello", system="Be brief.")]


def job_files(tmp_path: Path, tiny_model_dir: Path, with_mlx: bool) -> Path:
    files = tmp_path / ("mlx-job" if with_mlx else "torch-job")
    files.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(tmp_path / "peft" / name, files / name)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_model_dir / name, files / name)
    if with_mlx:
        shutil.copytree(tmp_path / "mlx", files / "mlx_adapter")
    return files


def test_base_and_adapter_columns_and_peft_round_trip(tiny_model_dir: Path, tmp_path: Path):
    from ktoforge_mlx.generate import generate

    mlx_adapter(tiny_model_dir, tmp_path)
    native = generate(str(tiny_model_dir), job_files(tmp_path, tiny_model_dir, True), PROMPTS, 12)
    converted = generate(str(tiny_model_dir), job_files(tmp_path, tiny_model_dir, False), PROMPTS, 12)
    assert [len(native["base"]), len(native["adapter"])] == [2, 2]
    assert native["base"] != native["adapter"]  # the adapter is applied
    assert converted == native

"""builtin:smollm2-135m loads in mlx-lm from the same converted folder and answers like in transformers."""

from __future__ import annotations

import pytest

from tests.smollm2 import smollm2_dir

mlx_lm = pytest.importorskip("mlx_lm")


def test_mlx_lm_loads_and_answers():
    model, tokenizer = mlx_lm.load(str(smollm2_dir()))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True)
    assert "Paris" in mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=16)

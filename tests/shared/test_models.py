"""A job's model string: builtin, local folder, hub id, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktoforge.models import ModelError, check_hub_access, check_model, resolve, tokenizer_dir


def test_builtin_and_local_models_resolve_to_folders(tiny_model_dir: Path, tmp_path: Path, kf_env):
    cache = tiny_model_dir.parent
    assert check_model("builtin:tiny-mistral") == "builtin"
    assert Path(resolve("builtin:tiny-mistral", cache)) == tiny_model_dir
    assert check_model(str(tiny_model_dir)) == "local"
    assert resolve(str(tiny_model_dir), cache) == str(tiny_model_dir)
    assert tokenizer_dir(str(tiny_model_dir), cache) == tiny_model_dir
    assert check_model("mistralai/Mistral-7B-Instruct-v0.3") == "hub"
    assert resolve("mistralai/Mistral-7B-Instruct-v0.3", cache) == "mistralai/Mistral-7B-Instruct-v0.3"
    assert tokenizer_dir("mistralai/Mistral-7B-Instruct-v0.3", cache) is None


@pytest.mark.parametrize(("model", "says"), [
    ("builtin:huge-llama", "unknown builtin model"),
    ("/nonexistent/model", "inside the model cache dir or a folder of KTOFORGE_MODEL_ROOTS"),
    ("a/b\n", "neither builtin:tiny-mistral"),
    ("not a model", "neither builtin:tiny-mistral"),
    ("a/b/c", "neither builtin:tiny-mistral"),
])
def test_anything_else_is_refused_with_a_reason(model: str, says: str, kf_env):
    with pytest.raises(ModelError, match=says):
        check_model(model)


def test_an_unreachable_or_missing_hub_model_fails_early_with_a_reason():
    """No hub here (no network): 'cannot reach'; with network the repo does not exist: 'not on the hub'."""
    with pytest.raises(ModelError, match="cannot reach the Hugging Face hub|is not on the Hugging Face hub"):
        check_hub_access("ktoforge-tests/no-such-model-7f3a", token=None)

"""Finding 4: a job's ``model`` names only what the operator allows.

Local folders only under KTOFORGE_MODEL_ROOTS (or the model cache dir), resolved first, answered with one text
whether or not the path exists; hub ids matched in full, from allowed organisations, under a size cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.hf_api import ModelInfo

from ktoforge import models
from ktoforge.models import ModelError, check_hub_access
from ktoforge.settings import get_settings
from tests.api.conftest import upload


def _plant(folder: Path) -> Path:
    """A folder that looks like a model (config.json, tokenizer files), outside every allowed root."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "mistral"}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    return folder


def _submit(client, dataset_id: str, model: str):
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": model})


def test_local_paths_outside_the_roots_get_the_answer_of_a_missing_path(client, dataset_id, tmp_path,
                                                                        tiny_model_dir):
    planted = _plant(tmp_path / "x")
    up = "../" * len(Path.cwd().parts)  # from the API's working directory up to /, as "../../../../tmp/x"
    attacks = [str(planted), up + str(planted).lstrip("/"), "/proc/self/cwd/" + up + str(planted).lstrip("/"),
               str(tiny_model_dir.joinpath(*[".."] * len(tiny_model_dir.parts), planted.relative_to("/")))]
    missing = [str(tmp_path / "missing"), str(tiny_model_dir.parent / "no-such-model"),
               str(tiny_model_dir.parent)]  # inside the root, but not a model folder
    answers = set()
    for model in attacks + missing:
        r = _submit(client, dataset_id, model)
        assert r.status_code == 422, (model, r.text)
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "model"]
        answers.add(error["msg"])
        r = upload(client, Path(__file__), model=model)  # the model is refused before the file is read
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "model"], (model, r.text)
    assert len(answers) == 1, answers  # no oracle: a planted folder reads like a missing one
    assert str(tmp_path) not in answers.pop()
    assert _submit(client, dataset_id, "builtin:tiny-mistral").status_code == 201
    assert _submit(client, dataset_id, str(tiny_model_dir)).status_code == 201  # inside the model cache dir


def test_a_symlink_from_inside_a_root_to_outside_is_refused(client, dataset_id, tmp_path, tiny_model_dir,
                                                           monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    (root / "escape").symlink_to(_plant(tmp_path / "outside"))
    _plant(root / "ok")
    monkeypatch.setenv("KTOFORGE_MODEL_ROOTS", f'["{root}"]')
    get_settings.cache_clear()
    assert _submit(client, dataset_id, str(root / "escape")).status_code == 422
    assert _submit(client, dataset_id, str(root / "ok")).status_code == 201
    assert _submit(client, dataset_id, str(tiny_model_dir)).status_code == 201  # the cache dir stays a root


def test_hub_ids_match_in_full_and_only_allowed_organisations(client, dataset_id, monkeypatch):
    for model in ("a/b\n", "a/b\nc", "mistralai/Mistral-7B-v0.3\n"):
        assert _submit(client, dataset_id, model).status_code == 422, repr(model)
    assert _submit(client, dataset_id, "someone/any-model").status_code == 201  # no allow-list: any organisation
    monkeypatch.setenv("KTOFORGE_HUB_ALLOWED_ORGS", '["mistralai", "HuggingFaceTB"]')
    get_settings.cache_clear()
    r = _submit(client, dataset_id, "someone/any-model")
    assert r.status_code == 422 and "KTOFORGE_HUB_ALLOWED_ORGS" in r.json()["detail"][0]["msg"]
    assert _submit(client, dataset_id, "mistralai/Mistral-7B-Instruct-v0.3").status_code == 201
    assert _submit(client, dataset_id, "huggingfacetb/SmolLM2-135M").status_code == 201  # hub names ignore case


def _info(files: dict[str, int]) -> ModelInfo:
    """What model_info(files_metadata=True) returns, built from the hub's JSON shape (no network here)."""
    return ModelInfo(id="mistralai/Mistral-7B-Instruct-v0.3", siblings=[
        {"rfilename": name, "size": size} for name, size in files.items()])


GB = 10**9
MISTRAL_FILES = {"config.json": 601, "tokenizer.json": 3_672_987, "consolidated.safetensors": int(14.5 * GB),
                 "model-00001-of-00003.safetensors": int(4.95 * GB), "model-00002-of-00003.safetensors": 5 * GB,
                 "model-00003-of-00003.safetensors": int(4.55 * GB), "model.safetensors.index.json": 23_950}


def test_hub_models_over_the_size_cap_are_refused_before_any_download(kf_env, monkeypatch):
    """The hub call is the boundary: it is replaced by its answer; what is counted and refused is ours."""
    import huggingface_hub

    asked: list[dict] = []

    def model_info(repo_id: str, **kw) -> ModelInfo:
        asked.append({"repo_id": repo_id, **kw})
        return _info(MISTRAL_FILES)

    monkeypatch.setattr(huggingface_hub, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("KTOFORGE_HUB_MAX_MODEL_GB", "10")
    get_settings.cache_clear()
    with pytest.raises(ModelError, match=r"14\.5 GB.*KTOFORGE_HUB_MAX_MODEL_GB=10"):
        check_hub_access("mistralai/Mistral-7B-Instruct-v0.3", token="hf_x")
    assert asked and asked[0]["files_metadata"] is True and asked[0]["token"] == "hf_x"
    monkeypatch.setenv("KTOFORGE_HUB_MAX_MODEL_GB", "16")  # the weights a load fetches, not every file listed
    get_settings.cache_clear()
    check_hub_access("mistralai/Mistral-7B-Instruct-v0.3", token=None)
    assert models.download_bytes(_info({"pytorch_model.bin": 3 * GB, "x.gguf": 9 * GB}).siblings) == 3 * GB
    assert models.download_bytes(_info({"weights.bin": 2, "README.md": 1}).siblings) == 3  # unknown layout: all

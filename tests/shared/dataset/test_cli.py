"""``ktoforge dataset inspect`` options: which model measures lengths, --on-error, and the JSON it prints."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ktoforge.cli.main import app
from ktoforge.dataset.report import build_report

ROW = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True}


def inspect(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["dataset", "inspect", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_local_model_folder_is_used_as_is(reference_dataset, tiny_model_dir, kf_env):
    code, out, _ = inspect(str(reference_dataset), "--model", str(tiny_model_dir), "--max-length", "512", "--json")
    assert code == 0
    assert json.loads(out) == build_report(reference_dataset, model_dir=tiny_model_dir,
                                           max_length=512).model_dump(mode="json")


def test_models_without_a_local_tokenizer_give_no_token_stats_and_a_note(tmp_path, kf_env):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    for model, says in (("mistralai/Mistral-7B-Instruct-v0.3", "hub id"), ("not a model", "neither")):
        code, out, err = inspect(str(path), "--model", model, "--json")
        assert code == 0 and says in err
        report = json.loads(out)
        assert report["stats"]["tokens"] is None and report["rows"] == 1


def test_on_error_skip_exits_0_and_lists_skipped_lines(tmp_path, kf_env):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROW) + "\n{oops\n" + json.dumps(ROW) + "\n")
    code, out, _ = inspect(str(path), "--on-error", "skip", "--json")
    report = json.loads(out)
    assert code == 0 and report["skipped_lines"] == [2] and report["rows"] == 2
    code, out, _ = inspect(str(path))
    assert code == 1 and "invalid_json" in out and "statistics" in out
    code, _, err = inspect(str(path), "--on-error", "ignore")
    assert code == 64 and "reject, skip" in err

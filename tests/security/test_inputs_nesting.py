"""Finding 8 (first half): a dataset line of 200k nested ``[`` was a 500 (RecursionError); now it is a line error."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ktoforge.cli.main import app
from tests.api.conftest import upload

ROW = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True}


def _nested(tmp_path: Path) -> Path:
    """A good row, then 200k unclosed brackets on line 2, then another good row."""
    path = tmp_path / "nested.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + "[" * 200_000 + "\n" + json.dumps({**ROW, "label": False}) + "\n")
    return path


def test_a_deeply_nested_line_is_a_422_at_its_line(client, tmp_path):
    r = upload(client, _nested(tmp_path))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["file", "line 2"] and error["type"] == "too_deeply_nested"
    assert client.get("/healthz").status_code == 200  # the API lives on


def test_the_cli_reports_the_same_line(tmp_path, kf_env):
    result = CliRunner().invoke(app, ["dataset", "inspect", str(_nested(tmp_path)), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(2, "too_deeply_nested")]
    assert report["rows"] == 2

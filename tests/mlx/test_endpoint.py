"""``ktoforge eval --endpoint`` against a real ``mlx_lm.server`` serving the builtin model with an MLX adapter:
the same report shape as a job's evaluation, and the server's replies are the ones our MLX worker generates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ktoforge.cli.main import app
from ktoforge.evaluation.prompts import parse_prompts
from tests.conftest import free_port, server_child
from tests.mlx.test_export import mlx_adapter
from tests.mlx.test_generate import job_files

pytest.importorskip("mlx_lm")

PROMPTS = [{"id": "folder", "question": "Create a folder named Projects", "expected_tools": ["vaultManager_createFolder"]},
           {"id": "hello", "question": "Hello there", "expected_tools": [], "tags": ["chat"]}]


@pytest.fixture()
def server(tiny_model_dir: Path, tmp_path: Path):
    mlx_adapter(tiny_model_dir, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with server_child([sys.executable, "-m", "mlx_lm", "server", "--model", str(tiny_model_dir), "--adapter-path",
                       str(tmp_path / "mlx"), "--host", "127.0.0.1", "--port", str(port)], f"{url}/models",
                      tmp_path / "server.log"):
        yield url


def test_endpoint_report_has_the_job_report_shape(server: str, tiny_model_dir: Path, tmp_path: Path):
    from ktoforge_mlx.generate import generate

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    result = CliRunner().invoke(app, ["eval", "--endpoint", server, "--model", "default_model", "--prompts",
                                      str(prompts), "--max-new-tokens", "12", "--json", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"prompts", "models", "rows"} and report["prompts"] == 2
    assert set(report["models"]["default_model"]) >= {"parses_rate", "arguments_valid_rate", "right_tool_rate",
                                                      "no_call_rate"}
    assert json.loads((tmp_path / "out" / "eval_report.json").read_text()) == report
    ours = generate(str(tiny_model_dir), job_files(tmp_path, tiny_model_dir, True), parse_prompts(PROMPTS), 12)
    assert [row["default_model"]["output"] for row in report["rows"]] == [o["text"] for o in ours["adapter"]]


def test_bad_prompt_files_and_missing_options_are_refused(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "expected_tools": "notalist"}]))
    result = CliRunner().invoke(app, ["eval", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--prompts", str(bad)])
    assert result.exit_code == 64 and "0.question" in flat(result.output)
    result = CliRunner().invoke(app, ["eval", "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 64 and "--model NAME and --prompts FILE" in flat(result.output)


def flat(output: str) -> str:
    """Typer's error box without its frame and line wrapping."""
    return " ".join(output.replace("│", " ").split())

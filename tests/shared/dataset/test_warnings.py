"""Each warning kind on a small file, at the exact lines that cause it; token statistics and their fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from ktoforge.dataset.report import build_report


def conv(prompt: str, answer: str, label: bool) -> dict:
    return {"conversations": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "label": label}


def tool_row(arguments: str) -> dict:
    return {"messages": [{"role": "user", "content": "make it"}, {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "mk", "arguments": arguments}}]}],
            "label": True}


ROWS = [
    conv("q1", "good answer", True),  # 1
    conv("q1", "bad answer", False),  # 2: q1 with both labels (first seen on line 1)
    conv("q1", "good answer", True),  # 3: exact duplicate of line 1
    conv("q2", "fine", True),  # 4
    conv("q3", "word " * 400, True),  # 5: the long one
    conv("q2", "fine", True),  # 6: duplicate of line 4
]


def write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_warning_at_its_lines(tmp_path, tiny_model_dir):
    report = build_report(write(tmp_path, ROWS), model_dir=tiny_model_dir, max_length=200)
    assert (report.rows, report.desirable, report.undesirable, report.error_count) == (6, 5, 1, 0)
    warnings = {w.kind: (w.count, w.lines) for w in report.warnings}
    assert warnings["duplicate_rows"] == (2, [3, 6])
    assert warnings["conflicting_labels"] == (1, [1])
    assert warnings["too_long"] == (1, [5])
    assert warnings["label_imbalance"][0] == 4
    assert warnings["length_confound"][0] == 6
    assert "tool_call_arguments_invalid" not in warnings
    assert report.stats["rows_truncated"] == 1


def test_truncation_amount_is_what_training_would_cut(tmp_path, tiny_model_dir):
    path = write(tmp_path, ROWS)
    report = build_report(path, model_dir=tiny_model_dir, max_length=200)
    tok = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    longest = report.stats["tokens"]["max"]
    assert longest > 400 and len(tok.encode("word " * 400, add_special_tokens=False).ids) <= longest
    (too_long,) = [w for w in report.warnings if w.kind == "too_long"]
    assert f"{longest - 200} tokens in all" in too_long.message


def test_invalid_tool_call_arguments_in_openai_rows(tmp_path):
    rows = [tool_row('{"path": "a"}'), tool_row('{"path": "a"'), tool_row("not json"), conv("x", "y", False)]
    report = build_report(write(tmp_path, rows))
    (warning,) = [w for w in report.warnings if w.kind == "tool_call_arguments_invalid"]
    assert (warning.count, warning.lines) == (2, [2, 3])


def test_without_a_tokenizer_lengths_are_characters_and_say_so(tmp_path, tiny_model_dir):
    path = write(tmp_path, ROWS)
    no_model = build_report(path)
    assert no_model.stats["tokens"] is None and "no local tokenizer" in no_model.stats["note"]
    assert no_model.stats["mean_characters"]["desirable"] > no_model.stats["mean_characters"]["undesirable"]
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "tokenizer.json").unlink()
    report = build_report(path, model_dir=bare)
    assert report.stats["tokens"] is None and "no tokenizer.json" in report.stats["note"]


def test_a_row_the_template_cannot_render_is_an_error_of_its_line(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% for m in messages %}{% if m.content == 'forbidden' %}"
                            "{{ raise_exception('no forbidden words') }}{% endif %}{{ m.content }}{% endfor %}")
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    report = build_report(write(tmp_path, [conv("q", "a", True), conv("forbidden", "a", True)]), model_dir=model)
    assert [(e.line, e.kind) for e in report.errors] == [(2, "template_error")]
    assert "no forbidden words" in report.errors[0].message and report.rows == 1


def test_on_error_must_be_reject_or_skip(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        build_report(write(tmp_path, ROWS), on_error="ignore")


def test_an_empty_file_reports_nothing_and_crashes_nowhere(tmp_path, tiny_model_dir):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    report = build_report(path, model_dir=tiny_model_dir)
    assert (report.rows, report.error_count, report.warnings) == (0, 0, [])
    assert report.stats["tokens"] == {"p50": 0, "p95": 0, "max": 0}

"""Each format reads to the same normalised rows; each error kind is reported at its exact line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ktoforge.dataset import load_examples
from ktoforge.dataset.report import build_report

USER, ANSWER = "List my notes", "Here they are."


def write(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def turns_of(path: Path) -> list[tuple]:
    return [(tuple((m["role"], m["content"]) for m in e.prompt), e.completion["content"], e.label, e.metadata)
            for e in load_examples(path)]


@pytest.mark.parametrize("row", [
    {"conversations": [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}], "label": True},
    {"prompt": USER, "completion": ANSWER, "label": True},
    {"prompt": [{"role": "user", "content": USER}], "completion": [{"role": "assistant", "content": ANSWER}],
     "label": True},
    {"messages": [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}], "label": True},
], ids=["conversations", "trl_standard", "trl_conversational", "openai"])
def test_every_format_normalises_alike(tmp_path, row):
    path = write(tmp_path, ["", {**row, "source": "x"}, "   "])  # blank lines are skipped
    assert turns_of(path) == [(((("user", USER),)), ANSWER, True, {"source": "x"})]
    assert build_report(path).rows == 1


def test_openai_tool_calls_render_in_the_reference_form_and_merge(tmp_path):
    row = {"messages": [
        {"role": "system", "content": "You manage a vault."},
        {"role": "user", "content": "Make a folder"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "vault_createFolder", "arguments": "{\"path\": \"Projects\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"success\": true}"},
        {"role": "assistant", "content": "Created Projects."}], "label": True}
    (ex,) = load_examples(write(tmp_path, [row]))
    assert [m["role"] for m in ex.prompt] == ["system", "user"]
    assert ex.completion["content"] == ('tool_call: vault_createFolder\narguments: {"path": "Projects"}\n\n'
                                        'Result: {"success": true}\n\nCreated Projects.')
    assert ex.invalid_tool_args == 0


def test_multi_turn_with_system_keeps_history_in_the_prompt(tmp_path):
    row = {"conversations": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                             {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                             {"role": "assistant", "content": "d"}], "label": False}
    (ex,) = load_examples(write(tmp_path, [row]))
    assert [(m["role"], m["content"]) for m in ex.prompt] == [("system", "S"), ("user", "a"), ("assistant", "b"),
                                                               ("user", "c")]
    assert ex.completion["content"] == "d" and ex.label is False


GOOD = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True}


@pytest.mark.parametrize("bad, kind, says", [
    ('{"conversations": [', "invalid_json", "invalid JSON"),
    ({"conversations": GOOD["conversations"]}, "missing_label", "no 'label'"),
    ({**GOOD, "label": "yes"}, "label_not_bool", 'found "yes"'),
    ({**GOOD, "label": 1}, "label_not_bool", "found 1"),
    ({"conversations": [{"role": "user", "content": "q"}], "label": True}, "no_assistant_turn", "no assistant"),
    ({"conversations": GOOD["conversations"] + [{"role": "user", "content": "more"}], "label": True},
     "last_turn_not_assistant", "'user'"),
    ({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}], "label": True},
     "empty_completion", "empty"),
    ({"conversations": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True},
     "unknown_role", '"robot"'),
    ({"conversations": [{"role": ["user"], "content": "q"}, {"role": "assistant", "content": "a"}], "label": True},
     "unknown_role", '["user"]'),
    ({"conversations": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"},
                        {"role": "assistant", "content": "a"}], "label": True}, "roles_not_alternating", "turn 2"),
    ({"conversations": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"},
                        {"role": "assistant", "content": "a"}], "label": True}, "roles_not_alternating",
     "follows no assistant tool call"),
    ({"conversations": [], "label": True}, "no_conversation", "non-empty list"),
    ({"conversations": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}], "label": True},
     "invalid_content", "turn 1: content must be text, found int"),
    ({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None,
                                                          "tool_calls": [{"function": {"arguments": "{}"}}]}],
      "label": True}, "invalid_tool_call", "turn 2: a tool call needs function.name"),
    ([1, 2], "not_an_object", "list"),
    ({"text": "hello", "label": True}, "unknown_format", "found keys: label, text"),
    ({"prompt": "q", "completion": "a", "label": True}, "mixed_format", "trl_standard"),
], ids=lambda v: v if isinstance(v, str) and v.isidentifier() else None)
def test_each_error_kind_at_its_exact_line(tmp_path, bad, kind, says):
    path = write(tmp_path, [GOOD, "", bad, GOOD])  # the bad row is on line 3
    report = build_report(path)
    assert report.error_count == 1 and report.error_counts == {kind: 1}
    (error,) = report.errors
    assert error.line == 3 and error.kind == kind and says in error.message, error
    assert report.rows == 2
    skipped = build_report(path, on_error="skip")
    assert skipped.skipped_lines == [3] and skipped.rows == 2


def test_conversational_rows_without_any_message_are_a_row_error(tmp_path):
    """Both lists empty was an IndexError that ended the whole check (a 500 at the API), not this row's error."""
    path = write(tmp_path, [{"prompt": [{"role": "user", "content": "q"}],
                             "completion": [{"role": "assistant", "content": "a"}], "label": True},
                            {"prompt": [], "completion": [], "label": False}])
    report = build_report(path)
    assert report.error_counts == {"no_conversation": 1} and report.errors[0].line == 2 and report.rows == 1


def test_non_utf8_and_oversize_lines_are_line_errors(tmp_path, monkeypatch):
    from ktoforge.dataset import examples

    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"label": "caf\xe9"}'.encode("latin-1") + b"\n" +
                     b'{"x": "' + b"a" * 2000 + b'"}\n')
    monkeypatch.setattr(examples, "MAX_LINE_BYTES", 1000)
    report = build_report(path)
    assert [(e.line, e.kind) for e in report.errors] == [(2, "not_utf8"), (3, "line_too_long")]
    assert "byte 0xe9 at column 15" in report.errors[0].message


def test_first_100_errors_listed_all_counted(tmp_path):
    report = build_report(write(tmp_path, ["{broken"] * 150 + [GOOD]))
    assert len(report.errors) == 100 and report.error_count == 150 and report.errors[-1].line == 100


@pytest.mark.parametrize("good", [
    GOOD,
    {"prompt": "q", "completion": "a", "label": True},
    {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
     "label": False},
    {"messages": GOOD["conversations"], "label": True},
], ids=["conversations", "trl_standard", "trl_conversational", "openai"])
def test_errors_are_found_in_every_format(tmp_path, good):
    rows = [good, {**good, "label": None}, good, {k: v for k, v in good.items() if k != "label"}]
    report = build_report(write(tmp_path, rows))
    assert [(e.line, e.kind) for e in report.errors] == [(2, "label_not_bool"), (4, "missing_label")]
    assert "found null" in report.errors[0].message and report.rows == 2

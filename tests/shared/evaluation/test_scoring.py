"""The scoring checked against a hand-made set of outputs: valid and broken calls in each form."""

from __future__ import annotations

import json

import pytest

from ktoforge.evaluation.prompts import EvalPrompt
from ktoforge.evaluation.report import build_report, to_markdown
from ktoforge.evaluation.scoring import score_output, summarize
from ktoforge.evaluation.toolcalls import parse_calls

ARGS = '{"path": "Projects/Notes", "context": {"sessionId": "abc"}}'
EXPECTED = ["vaultManager_createFolder"]

# (output text, OpenAI tool_calls, parses, arguments valid, right tool)
CASES = {
    "dataset valid": (f"tool_call: vaultManager_createFolder\narguments: {ARGS}\n\nResult: ok", None, True, True, True),
    "dataset after prose": (f"Sure, let me do that.\n\ntool_call: vaultManager_createFolder\narguments: {ARGS}",
                            None, True, True, True),
    "dataset wrong tool": (f"tool_call: vaultManager_deleteNote\narguments: {ARGS}", None, True, True, False),
    "dataset truncated json": ('tool_call: vaultManager_createFolder\narguments: {"path": "Projects/', None,
                               True, False, True),
    "dataset no arguments line": ("tool_call: vaultManager_createFolder\nI made it.", None, True, False, True),
    "dataset arguments not an object": ("tool_call: vaultManager_createFolder\narguments: [1, 2]", None,
                                        True, False, True),
    "mistral v3 valid": (f'[TOOL_CALLS][{{"name": "vaultManager_createFolder", "arguments": {ARGS}}}]', None,
                         True, True, True),
    "mistral v3 broken list": ('[TOOL_CALLS][{"name": "vaultManager_createFolder", "arguments": {"path": ', None,
                               False, False, False),
    "mistral v3 string arguments": ('[TOOL_CALLS][{"name": "vaultManager_createFolder", "arguments": "{\\"a\\": 1}"}]',
                                    None, True, True, True),
    "mistral v11 valid": (f"[TOOL_CALLS]vaultManager_createFolder[ARGS]{ARGS}", None, True, True, True),
    "mistral v11 bad json": ("[TOOL_CALLS]vaultManager_createFolder[ARGS]{path: x}", None, True, False, True),
    "openai valid": (None, [{"type": "function", "function": {"name": "vaultManager_createFolder",
                                                               "arguments": ARGS}}], True, True, True),
    "openai bad json": ("", [{"type": "function", "function": {"name": "vaultManager_createFolder",
                                                                "arguments": '{"path": '}}], True, False, True),
    "openai no name": ("", [{"type": "function", "function": {"arguments": ARGS}}], False, False, False),
    "plain prose": ("I created the folder Projects/Notes for you.", None, False, False, False),
    "empty": ("", None, False, False, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_hand_made_output_is_scored_as_a_person_would(case):
    text, tool_calls, parses, valid, right = CASES[case]
    score = score_output(text, EXPECTED, tool_calls)
    assert (score["parses"], score["arguments_valid"], score["right_tool"]) == (parses, valid, right)
    assert score["expects_call"] is True and score["no_call"] is None


def test_forms_are_told_apart():
    forms = {case: [c.form for c in parse_calls(text, calls)] for case, (text, calls, *_) in CASES.items()}
    assert forms["dataset valid"] == ["dataset"]
    assert forms["mistral v11 valid"] == ["mistral"]
    assert forms["openai valid"] == ["openai"]


def test_a_conversation_expecting_no_call_wants_a_plain_reply():
    assert score_output("Which template should I copy?", [])["no_call"] is True
    called = score_output(f"tool_call: vaultManager_createFolder\narguments: {ARGS}", [])
    assert called["no_call"] is False and called["called"] == ["vaultManager_createFolder"]
    assert called["parses"] is None  # call checks do not apply


def test_every_call_of_an_output_must_have_valid_arguments():
    text = f"tool_call: a_b\narguments: {ARGS}\n\ntool_call: a_c\narguments: {{broken"
    score = score_output(text, ["a_b"])
    assert score["called"] == ["a_b", "a_c"] and score["parses"] and not score["arguments_valid"]


def test_summary_shares_are_over_the_prompts_they_apply_to():
    rows = [score_output(CASES[c][0], EXPECTED, CASES[c][1]) for c in ("dataset valid", "plain prose",
                                                                         "dataset wrong tool", "openai bad json")]
    rows += [score_output("Sure.", []), score_output("tool_call: x\narguments: {}", [])]
    summary = summarize(rows)
    assert summary["expecting_call"] == 4 and summary["expecting_no_call"] == 2
    assert (summary["parses"], summary["parses_rate"]) == (3, 0.75)
    assert (summary["arguments_valid"], summary["right_tool"]) == (2, 2)
    assert summary["no_call_rate"] == 0.5


def test_report_puts_models_side_by_side():
    prompts = [EvalPrompt(id="a", question="make a folder", expected_tools=EXPECTED),
               EvalPrompt(id="b", question="hello", expected_tools=[])]
    outputs = {"base": [{"text": "ok"}, {"text": "hi"}],
               "adapter": [{"text": CASES["dataset valid"][0]}, {"text": "hello!"}]}
    report = build_report(prompts, outputs)
    assert report["prompts"] == 2 and list(report["models"]) == ["base", "adapter"]
    assert report["models"]["base"]["parses_rate"] == 0.0 and report["models"]["adapter"]["parses_rate"] == 1.0
    assert report["rows"][0]["adapter"]["right_tool"] is True
    json.dumps(report)  # serialisable as eval_report.json
    md = to_markdown(report)
    assert "| parses as a tool call | 0.0 % | 100.0 % |" in md and "| b | (no call) | ok (no call) |" in md

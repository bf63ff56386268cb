"""The fast path for plain rows (``formats.plain_turns``) gives what the checked path gives, or leaves the row to it."""

from __future__ import annotations

from typing import Any

import pytest

from ktoforge.dataset.formats import RowError, check_alternation, plain_turns, turns


def turn(role: Any, content: Any = "x", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


@pytest.mark.parametrize("messages", [
    [turn("user"), turn("assistant")],
    [turn("system"), turn("user"), turn("assistant", "a"), turn("user", "b"), turn("assistant", "")],
    [turn("user"), turn("system"), turn("assistant")],
    [{"content": "q", "role": "user", "name": "me"}, turn("assistant", tool_calls=[])],
    [turn("user", tool_calls=None), turn("assistant", "tool_call: f\narguments: {}")],
], ids=["pair", "history", "system_between", "extra_keys", "empty_tool_calls"])
def test_plain_rows_give_what_turns_gives(messages):
    merged = turns(messages)
    check_alternation(merged)
    assert plain_turns(messages) == merged
    assert [list(m) for m in plain_turns(messages)] == [list(m) for m in merged]  # same keys, same order


@pytest.mark.parametrize("messages", [
    [],
    [turn("user")],
    [turn("user"), turn("assistant"), turn("system")],
    [turn("user"), turn("user"), turn("assistant")],
    [turn("assistant")],
    [turn("robot"), turn("assistant")],
    [turn("user"), turn("assistant", None)],
    [turn("user"), turn("assistant", [{"text": "a"}])],
    [turn("user"), turn("assistant", tool_calls=[{"function": {"name": "f"}}]), turn("tool", "r"),
     turn("assistant", "done")],
    [turn("user"), "not a turn"],
], ids=["empty", "no_assistant", "ends_with_system", "not_alternating", "starts_with_assistant", "unknown_role",
        "null_content", "content_parts", "tool_calls", "not_an_object"])
def test_other_rows_are_left_to_the_checked_path(messages):
    assert plain_turns(messages) is None


def test_a_row_left_to_the_checked_path_still_fails_there():
    with pytest.raises(RowError) as err:
        check_alternation(turns([turn("user"), turn("user"), turn("assistant")]))
    assert err.value.kind == "roles_not_alternating"

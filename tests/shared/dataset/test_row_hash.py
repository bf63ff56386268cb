"""Row hashes (exact duplicates) and tool-call argument checks, each against the definition it stands for.

A row's hash must be equal exactly when the rows are equal as JSON (``examples._turns_hash`` for plain rows,
sorted JSON otherwise), and ``formats.invalid_tool_args`` must count what a plain reading of its rule counts.
"""

from __future__ import annotations

import json
import re
from itertools import combinations
from typing import Any

import orjson
import pytest

from ktoforge.dataset.examples import normalise
from ktoforge.dataset.formats import invalid_tool_args


def conv(*turns: tuple[str, str], label: bool = True, key: str = "conversations", **extra: Any) -> dict[str, Any]:
    return {key: [{"role": r, "content": c} for r, c in turns], "label": label, **extra}


PAIR = (("user", "q"), ("assistant", "a"))
ROWS = [
    conv(*PAIR),
    conv(*PAIR, label=False),
    conv(("user", "q"), ("assistant", "b")),
    conv(("user", "q a"), ("assistant", "")) | {"conversations": [{"role": "user", "content": "q a"},
                                                                     {"role": "assistant", "content": " "}]},
    conv(("system", "s"), *PAIR),
    conv(*PAIR, id=1),
    conv(*PAIR, id=2),
    conv(*PAIR, id=1.0),
    conv(*PAIR, id=True),
    conv(*PAIR, id="1"),
    conv(*PAIR, id=None),
    conv(*PAIR, id=0.0),
    conv(*PAIR, id=-0.0),
    conv(*PAIR, id=1, source="a"),
    conv(*PAIR, id=1, source="b"),
    conv(*PAIR, source=1, id="a"),
    conv(*PAIR, id={"n": 1}),
    conv(*PAIR, id=[1]),
    conv(*PAIR, prompt="extra"),
    conv(*PAIR, messages="extra"),
    conv(*PAIR, key="messages"),
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "name": "x"}],
     "label": True},
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": []}],
     "label": True},
    {"prompt": "q", "completion": "a", "label": True},
    {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
     "label": True},
]


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON texts say: Python's == also takes 1 for 1.0 and True, and 0.0 for -0.0."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def spelled_otherwise(row: dict[str, Any]) -> bytes:
    """The same JSON value in another text: keys in reverse order at every level, with spaces."""
    def flip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: flip(value[k]) for k in reversed(list(value))}
        return [flip(v) for v in value] if isinstance(value, list) else value
    return json.dumps(flip(row), indent=1).encode()


def row_hash(line: bytes) -> int:
    return normalise(orjson.loads(line), None, True).row_hash


def test_hashes_are_equal_exactly_for_rows_equal_as_json():
    usable = [r for r in ROWS if r["conversations" if "conversations" in r else "messages" if "messages" in r
                                  else "completion"] != [] and not _empty_completion(r)]
    hashes = [row_hash(orjson.dumps(r)) for r in usable]
    for (i, a), (j, b) in combinations(enumerate(usable), 2):
        assert (hashes[i] == hashes[j]) == (json_equal(a, b)), (a, b)
    for row, expected in zip(usable, hashes):
        assert row_hash(spelled_otherwise(row)) == expected, row


def _empty_completion(row: dict[str, Any]) -> bool:
    turns = row.get("conversations") or row.get("messages") or []
    return bool(turns) and not str(turns[-1].get("content", "")).strip()


def reference_count(text: str) -> int:
    """The rule as first written: each match of the pattern, searched again from its end, is valid when the rest
    of its line is one JSON value, or else when one JSON value starts there (text may follow)."""
    pattern, bad, pos = re.compile(r"tool_call:\s*(\S+)\s*\narguments:\s*"), 0, 0
    while match := pattern.search(text, pos):
        end = text.find("\n", match.end())
        line = text[match.end():] if end < 0 else text[match.end():end]
        try:
            json.loads(line)
        except json.JSONDecodeError:
            try:
                json.JSONDecoder().raw_decode(text, match.end())
            except json.JSONDecodeError:
                bad += 1
        pos = match.end()
    return bad


@pytest.mark.parametrize("text", [
    "no call at all",
    'tool_call: f\narguments: {"a": 1}',
    'tool_call: f\narguments: {"a": 1}\n\nResult: ok\n\ntool_call: g\narguments: {bad}',
    'tool_call: f\narguments:\n{"a": 1}',
    'tool_call: f\narguments: {"a":\n 1}',
    'tool_call: f\narguments: {"a": 1} and then some text',
    'tool_call: f\narguments: [1, 2',
    'tool_call:   f   \narguments:   ',
    "tool_call: f g\narguments: {}",
    'tool_call: f\narguments: "\\ud800"',
    'tool_call: f\narguments: NaN',
    'tool_call: f\narguments: {"x": "tool_call: g"}\narguments: {',
    'tool_call: f\narguments: tool_call: g\narguments: {}',
    "tool_call: f\ntool_call: g\narguments: 7",
])
def test_invalid_tool_args_counts_what_the_rule_says(text):
    assert invalid_tool_args(text) == reference_count(text)

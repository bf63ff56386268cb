"""Scores of one output against what its prompt expects, and the shares over a prompt set.

Per output: a tool call parses (it has a name); its arguments are one valid JSON object; the first call names
the first expected tool. For a prompt that expects no call, the output is scored on having none. Shares
are over the prompts they apply to, so a set of mostly tool prompts and a few chat prompts reads plainly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ktoforge.evaluation.toolcalls import parse_calls

RATES = ("parses", "arguments_valid", "right_tool")


def score_output(text: str | None, expected_tools: list[str], tool_calls: list[Any] | None = None) -> dict[str, Any]:
    """One row's verdicts; ``None`` where a verdict does not apply (a call check on a no-call prompt)."""
    calls = [c for c in parse_calls(text, tool_calls) if c.name]
    first = calls[0] if calls else None
    if not expected_tools:
        return {"expects_call": False, "called": [c.name for c in calls], "parses": None,
                "arguments_valid": None, "right_tool": None, "no_call": first is None}
    return {
        "expects_call": True, "called": [c.name for c in calls], "parses": first is not None,
        "arguments_valid": first is not None and all(c.arguments_valid for c in calls),
        "right_tool": first is not None and first.name == expected_tools[0], "no_call": None,
    }


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def summarize(scores: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts and shares of one model's rows: hits and shares
    over prompts expecting a call (``parses_rate``, ``arguments_valid_rate``, ``right_tool_rate``),
    ``no_call_rate`` over those expecting none."""
    rows = list(scores)
    calling = [r for r in rows if r["expects_call"]]
    quiet = [r for r in rows if not r["expects_call"]]
    out: dict[str, Any] = {"prompts": len(rows), "expecting_call": len(calling), "expecting_no_call": len(quiet)}
    for key in RATES:
        hits = sum(1 for r in calling if r[key])
        out[key] = hits
        out[f"{key}_rate"] = _share(hits, len(calling))
    out["no_call"] = sum(1 for r in quiet if r["no_call"])
    out["no_call_rate"] = _share(out["no_call"], len(quiet))
    return out

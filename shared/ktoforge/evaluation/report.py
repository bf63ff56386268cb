"""``eval_report.json`` and ``eval_report.md``: models side by side over the same prompts.

JSON: ``{"prompts": N, "models": {"base": {summary}, "adapter": {summary}}, "rows": [...]}``, one row per
prompt with each model's output and verdicts; any number of models (an endpoint run has one). The markdown
puts the shares in one table so a user reads "better or not" at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ktoforge.evaluation.prompts import EvalPrompt
from ktoforge.evaluation.scoring import RATES, score_output, summarize

MAX_OUTPUT_CHARS = 4000  # per output in the report: enough to read a call, bounded for huge generations


def build_report(prompts: Sequence[EvalPrompt], outputs: Mapping[str, Sequence[dict[str, Any]]],
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``outputs[model][i]`` is ``{"text": str, "tool_calls": list | None}`` for ``prompts[i]``."""
    scores = {name: [score_output(o.get("text"), p.expected_tools, o.get("tool_calls"))
                     for p, o in zip(prompts, outs, strict=True)] for name, outs in outputs.items()}
    rows = []
    for i, prompt in enumerate(prompts):
        row: dict[str, Any] = {"id": prompt.id, "question": prompt.question[:MAX_OUTPUT_CHARS],
                               "expected_tools": prompt.expected_tools, "tags": prompt.tags}
        for name, outs in outputs.items():
            row[name] = {"output": (outs[i].get("text") or "")[:MAX_OUTPUT_CHARS],
                         **({"tool_calls": outs[i]["tool_calls"]} if outs[i].get("tool_calls") else {}),
                         **scores[name][i]}
        rows.append(row)
    return {"prompts": len(prompts), **(meta or {}),
            "models": {name: summarize(s) for name, s in scores.items()}, "rows": rows}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def to_markdown(report: dict[str, Any], title: str = "Tool-call evaluation") -> str:
    """A table of shares per model, then one line per prompt with each model's verdict."""
    models = list(report["models"])
    lines = [f"# {title}", "", f"{report['prompts']} prompts.", "",
             "| | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    labels = {"parses_rate": "parses as a tool call", "arguments_valid_rate": "arguments are valid JSON",
              "right_tool_rate": "calls the expected tool", "no_call_rate": "no call where none is expected"}
    for key in (*(f"{r}_rate" for r in RATES), "no_call_rate"):
        lines.append(f"| {labels[key]} | " + " | ".join(_pct(report["models"][m][key]) for m in models) + " |")
    lines += ["", "| prompt | expected | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for row in report["rows"]:
        verdicts = [_verdict(row[m]) for m in models]
        lines.append(f"| {row['id']} | {', '.join(row['expected_tools']) or '(no call)'} | " + " | ".join(verdicts) + " |")
    return "\n".join(lines) + "\n"


def _verdict(cell: dict[str, Any]) -> str:
    if not cell["expects_call"]:
        return "ok (no call)" if cell["no_call"] else f"called {', '.join(cell['called'])}"
    if not cell["parses"]:
        return "no call"
    mark = "ok" if cell["right_tool"] and cell["arguments_valid"] else "wrong"
    args = "" if cell["arguments_valid"] else ", bad JSON"
    return f"{mark}: {cell['called'][0]}{args}".replace("|", "\\|")

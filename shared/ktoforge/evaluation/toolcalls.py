"""Tool calls found in a model's output, in the three forms a model trained here may produce.

- the reference dataset's own text form: ``tool_call: NAME`` then ``arguments: {json}`` on the next line;
- Mistral's ``[TOOL_CALLS]``: a JSON list of ``{"name", "arguments"}`` (v3 tokenizers) or ``NAME[ARGS]{json}``
  (v11 and later);
- OpenAI's ``tool_calls`` of an assistant message, as an OpenAI-compatible server returns them (arguments
  are a JSON string there).

Parsing is lenient about where a call sits (a model often writes prose first) and strict about what counts:
a call has a name, and its arguments are valid only when they decode to exactly one JSON object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DATASET_CALL = re.compile(r"tool_call:\s*([^\s]+)[ \t]*\r?\n\s*arguments:[ \t]*")
DATASET_NAME_ONLY = re.compile(r"tool_call:\s*([^\s]+)")
MISTRAL_MARK = "[TOOL_CALLS]"
MISTRAL_V11 = re.compile(r"\s*([A-Za-z0-9_.\-]+)\[ARGS\]")


@dataclass(frozen=True)
class ToolCall:
    """One call: its name, its raw arguments text, whether that text is one JSON object, and its form."""

    name: str
    arguments: str
    arguments_valid: bool
    form: str


def _json_object_at(text: str) -> tuple[str, bool]:
    """The JSON value starting ``text`` (after blanks) and whether it is a JSON object; on a decode error,
    the rest of the line, invalid."""
    stripped = text.lstrip()
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return stripped.split("\n", 1)[0], False
    return stripped[:end], isinstance(value, dict)


def _arguments_valid(arguments: Any) -> tuple[str, bool]:
    """OpenAI and Mistral v3 arguments: a JSON string holding an object, or the object itself."""
    if isinstance(arguments, dict):
        return json.dumps(arguments), True
    if isinstance(arguments, str):
        try:
            return arguments, isinstance(json.loads(arguments), dict)
        except json.JSONDecodeError:
            return arguments, False
    return json.dumps(arguments), False


def dataset_calls(text: str) -> list[ToolCall]:
    """``tool_call: NAME`` / ``arguments: {…}`` pairs; a name with no arguments line is a call with invalid
    arguments (it was attempted and cannot be executed)."""
    calls = []
    for match in DATASET_NAME_ONLY.finditer(text):
        full = DATASET_CALL.match(text, match.start())
        if full is None:
            calls.append(ToolCall(match.group(1), "", False, "dataset"))
            continue
        arguments, valid = _json_object_at(text[full.end():])
        calls.append(ToolCall(full.group(1), arguments, valid, "dataset"))
    return calls


def mistral_calls(text: str) -> list[ToolCall]:
    """Every ``[TOOL_CALLS]`` block: a JSON list of calls, or v11's ``NAME[ARGS]{json}``."""
    calls = []
    for block in text.split(MISTRAL_MARK)[1:]:
        v11 = MISTRAL_V11.match(block)
        if v11:
            arguments, valid = _json_object_at(block[v11.end():])
            calls.append(ToolCall(v11.group(1), arguments, valid, "mistral"))
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(block.lstrip())
        except json.JSONDecodeError:
            calls.append(ToolCall("", block.strip().split("\n", 1)[0], False, "mistral"))
            continue
        for item in value if isinstance(value, list) else [value]:
            name = item.get("name") if isinstance(item, dict) else None
            arguments, valid = _arguments_valid(item.get("arguments") if isinstance(item, dict) else None)
            calls.append(ToolCall(name if isinstance(name, str) else "", arguments, valid, "mistral"))
    return calls


def openai_calls(tool_calls: list[Any] | None) -> list[ToolCall]:
    """An OpenAI assistant message's ``tool_calls``."""
    calls = []
    for item in tool_calls or []:
        fn = item.get("function") if isinstance(item, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        name = fn.get("name")
        arguments, valid = _arguments_valid(fn.get("arguments"))
        calls.append(ToolCall(name if isinstance(name, str) else "", arguments, valid, "openai"))
    return calls


def parse_calls(text: str | None, tool_calls: list[Any] | None = None) -> list[ToolCall]:
    """All calls of one output, in order of form: OpenAI's structured calls, then Mistral's, then the
    dataset's text form (a server that parsed the text itself returns it in ``tool_calls``)."""
    text = text or ""
    return openai_calls(tool_calls) + mistral_calls(text) + dataset_calls(text)

"""Every common KTO row format, normalised to one shape: prompt turns, the completion turn, the label.

Formats (one per file, detected from its first row):
- ``conversations``: {"conversations": [{role, content}...], "label": bool} (the reference file);
- ``trl_standard``: {"prompt": str, "completion": str, "label": bool} (prompt = one user turn);
- ``trl_conversational``: {"prompt": [messages], "completion": [messages], "label": bool};
- ``openai``: {"messages": [...], "label": bool}, with assistant ``tool_calls`` (content may be null)
  and ``tool`` messages.
Tool calls are rendered the reference file's way (``tool_call: NAME\\narguments: {json}``); a tool result
becomes ``Result: ...``; an assistant turn with its tool calls, their results and the reply that follows
them make one assistant turn, so user/assistant turns alternate as Mistral's template demands.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

Message = dict[str, Any]
ROLES = {"system", "user", "assistant", "tool"}
FORMATS = ("conversations", "trl_standard", "trl_conversational", "openai")


class RowError(ValueError):
    """A row that cannot be used; ``kind`` groups errors in the report."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def detect(obj: Any) -> str:
    if not isinstance(obj, dict):
        raise RowError("not_an_object", f"expected a JSON object, found {type(obj).__name__}")
    if "conversations" in obj:
        return "conversations"
    if "messages" in obj:
        return "openai"
    if "prompt" in obj and "completion" in obj:
        return "trl_standard" if isinstance(obj["prompt"], str) else "trl_conversational"
    raise RowError("unknown_format", "no 'conversations', 'messages' or 'prompt'/'completion' field "
                   f"(found keys: {', '.join(sorted(obj)) or 'none'})")


def label_of(obj: dict[str, Any]) -> bool:
    if "label" not in obj:
        raise RowError("missing_label", "no 'label' field")
    label = obj["label"]
    if not isinstance(label, bool):
        raise RowError("label_not_bool", f"'label' must be true or false, found {json.dumps(label)[:80]}")
    return label


def messages_of(obj: dict[str, Any], fmt: str) -> list[Message]:
    """The row's turns in order, as given (before merging)."""
    if fmt == "trl_standard":
        if not isinstance(obj["completion"], str):
            raise RowError("invalid_content", "'completion' must be a string when 'prompt' is one")
        return [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    if fmt == "trl_conversational":
        prompt, completion = obj["prompt"], obj["completion"]
        if not isinstance(prompt, list) or not isinstance(completion, list):
            raise RowError("invalid_content", "'prompt' and 'completion' must both be lists of messages")
        if not prompt and not completion:
            raise RowError("no_conversation", "'prompt' and 'completion' are both empty lists of messages")
        return prompt + completion
    key = "conversations" if fmt == "conversations" else "messages"
    if not isinstance(obj[key], list) or not obj[key]:
        raise RowError("no_conversation", f"'{key}' must be a non-empty list of messages")
    return obj[key]


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content):
        return "".join(p.get("text", "") for p in content)  # OpenAI content parts
    raise RowError("invalid_content", f"{where}: content must be text, found {type(content).__name__}")


TOOL_CALL = re.compile(r"tool_call:\s*(\S+)\s*\narguments:\s*")
_DECODER = json.JSONDecoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)


def invalid_tool_args(text: str) -> int:
    """Tool calls in ``text`` (reference form) whose arguments are not one valid JSON value.

    The same matches as ``TOOL_CALL.finditer``, found faster: the regex is tried only where ``str.find`` sees
    its literal start. Arguments written the reference way are one line: when the rest of that line is a
    whole value for msgspec, they are valid, checked here in the loop (this runs for every assistant turn of
    every check); any other case goes to ``_valid_json_prefix``.
    """
    bad, pos = 0, text.find("tool_call:")
    while pos >= 0:
        match = TOOL_CALL.match(text, pos)
        if match:
            start = match.end()
            end = text.find("\n", start)
            try:
                _RAW.decode(text[start:] if end < 0 else text[start:end])
            except (msgspec.DecodeError, UnicodeEncodeError):
                bad += not _valid_json_prefix(text, start)
            pos = text.find("tool_call:", start)
        else:
            pos = text.find("tool_call:", pos + 1)
    return bad


def _valid_json_prefix(text: str, start: int) -> bool:
    """Whether one JSON value starts at ``start`` (what ``raw_decode`` accepts; text may follow it), for
    arguments whose line alone msgspec refused.

    msgspec checks a line without building it (decoded as ``Raw``: 4x orjson, which built every dict and list
    only to drop them; the largest cost of a check) and accepts nothing the standard library refuses (NaN,
    escaped lone surrogates, trailing text: it refuses those; a lone surrogate itself raises
    UnicodeEncodeError). So only what it refused comes here, and the standard library decides, in place (no
    copy of the rest of the text).
    """
    try:
        _DECODER.raw_decode(text, start)
        return True
    except json.JSONDecodeError:
        return False


def render_tool_call(call: Any, where: str) -> str:
    """One OpenAI tool call in the reference file's text form."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RowError("invalid_tool_call", f"{where}: a tool call needs function.name")
    args = fn.get("arguments", "{}")
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return f"tool_call: {fn['name']}\narguments: {args}"


def turns(messages: list[Any]) -> list[Message]:
    """Checked turns, each assistant turn merged with its tool results and the reply after them.

    ``open_`` says the last turn is an assistant turn still taking tool results and the reply to them (it made
    tool calls, or a result came last). Error texts ("turn N") are built only when raised: this runs once per
    row of every dataset check.
    """
    out: list[Message] = []
    open_ = False
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict):
            raise RowError("invalid_content", f"turn {i} is not an object")
        role = m.get("role")
        if type(role) is not str or role not in ROLES:  # a list or an object is unhashable: no set lookup
            raise RowError("unknown_role", f"turn {i} has unknown role {json.dumps(role)[:40]} "
                           f"(expected one of {', '.join(sorted(ROLES))})")
        content = m.get("content")
        text = content if type(content) is str else _text(content, f"turn {i}")
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            for call in calls if isinstance(calls, list) else [calls]:
                text = "\n\n".join(t for t in (text, render_tool_call(call, f"turn {i}")) if t)
        elif role == "tool":
            text = f"Result: {text}"
        if role in ("assistant", "tool") and out and out[-1]["role"] == "assistant" and (role == "tool" or open_):
            out[-1]["content"] += "\n\n" + text  # call, result and reply: one assistant turn
            open_ = role == "tool" or bool(calls)
            continue
        if role == "tool":
            raise RowError("roles_not_alternating", f"turn {i}: a tool result that follows no assistant tool call")
        out.append({"role": role, "content": text})
        open_ = bool(calls)
    return out


def plain_turns(messages: list[Any]) -> list[Message] | None:
    """What ``turns`` gives, already checked, for the common row: text turns that alternate user/assistant
    (system turns aside) and end with the assistant, with no tool call or tool result. None for any other
    row, which ``turns`` and ``check_alternation`` then check one step at a time, telling its error.

    Exact: such turns merge with nothing (only tool calls and results merge), so ``turns`` would copy each
    as {role, content} and every check of ``normalise`` before the completion's would pass. A turn that is
    already just {role, content} is kept as parsed, not copied (nothing changes a row's turns after this).
    """
    out: list[Message] = []
    expected, role = "user", None
    for m in messages:
        if type(m) is not dict or type(content := m.get("content")) is not str or m.get("tool_calls"):
            return None
        role = m.get("role")
        if role == expected:
            expected = "assistant" if expected == "user" else "user"
        elif role != "system":
            return None
        out.append(m if len(m) == 2 else {"role": role, "content": content})
    return out if role == "assistant" else None


def check_alternation(merged: list[Message]) -> None:
    """System turns aside, turns must go user, assistant, user, ...: Mistral's template accepts no other order."""
    expected = "user"
    for i, m in enumerate(merged, start=1):
        if m["role"] == "system":
            continue
        if m["role"] != expected:
            raise RowError("roles_not_alternating",
                           f"turn {i} is {m['role']!r} where {expected!r} was expected (turns must alternate "
                           "user/assistant, starting with user)")
        expected = "assistant" if expected == "user" else "user"

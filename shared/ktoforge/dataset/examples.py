"""Reading a JSONL file into normalised examples: prompt turns, the completion turn, the label.

Streams the file line by line so memory stays flat on large files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, Any]


@dataclass
class Example:
    """One usable row: ``line`` is its 1-based line number in the file."""

    line: int
    prompt: list[Message]
    completion: Message
    label: bool
    metadata: dict[str, Any] = field(default_factory=dict)


class RowError(ValueError):
    """A row that cannot be used; ``kind`` groups errors in the report."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def normalise(obj: Any) -> Example:
    """Turn one parsed row into an Example (line set by the caller), or raise RowError."""
    if not isinstance(obj, dict):
        raise RowError("not_an_object", f"expected a JSON object, found {type(obj).__name__}")
    if "label" not in obj:
        raise RowError("missing_label", "no 'label' field")
    if not isinstance(obj["label"], bool):
        raise RowError("label_not_bool", f"'label' must be true or false, found {json.dumps(obj['label'])}")
    messages = obj.get("conversations")
    if not isinstance(messages, list) or not messages:
        raise RowError("no_conversation", "no 'conversations' list")
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=None)
    if last is None:
        raise RowError("no_assistant_turn", "no assistant turn")
    if last != len(messages) - 1:
        raise RowError("last_turn_not_assistant", f"last turn is from {messages[-1].get('role')!r}, not the assistant")
    if not any(m.get("role") == "user" for m in messages[:last]):
        raise RowError("no_user_turn", "no user turn before the assistant turn")
    completion = messages[last]
    if not str(completion.get("content") or "").strip():
        raise RowError("empty_completion", "the last assistant turn is empty")
    extra = {k: v for k, v in obj.items() if k not in ("conversations", "label")}
    return Example(0, [dict(m) for m in messages[:last]], dict(completion), obj["label"], extra)


def iter_rows(path: str | Path) -> Iterator[tuple[int, Example | RowError]]:
    """Yield (line number, Example or the RowError of that line); blank lines are skipped."""
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield lineno, RowError("invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            try:
                example = normalise(obj)
            except RowError as err:
                yield lineno, err
                continue
            example.line = lineno
            yield lineno, example


def load_examples(path: str | Path) -> list[Example]:
    """Every valid example of a file (invalid lines are the report's business, not training's)."""
    return [item for _, item in iter_rows(path) if isinstance(item, Example)]

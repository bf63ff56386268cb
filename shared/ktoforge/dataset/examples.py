"""Reading a JSONL file into normalised examples: prompt turns, the completion turn, the label.

Streams the file line by line (bytes) so memory stays flat on large files and a non-UTF-8 byte is an
error of its line, not of the file.

Lines are parsed with orjson (3-5x the standard library's speed: parsing and hashing were most of a dataset
check's time, bench/dataset_bench.py), straight from the line's bytes: orjson accepts only valid UTF-8. A line
orjson refuses is decoded and parsed again by the standard library, which decides as it always did: its error
message is the row's, and what it alone accepts (NaN, Infinity) is still accepted. orjson reads an integer past
64 bits as a float: only metadata (never trained on) or an OpenAI tool call whose arguments are an object rather
than a string can hold one; there it is written as that float, and rows that differ only past a float's
precision count as duplicates.
"""

from __future__ import annotations

import io
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ktoforge.dataset.formats import (
    RowError,
    check_alternation,
    detect,
    invalid_tool_args,
    label_of,
    messages_of,
    plain_turns,
    turns,
)

Message = dict[str, Any]
READ_BLOCK = 1 << 16  # a block, its lines and their rows stay in a core's L2 cache: 1 MiB blocks cost a check 5-15 %
MAX_LINE_BYTES = 16 << 20  # a longer line is refused: no single conversation is 16 MiB of text
NOT_METADATA = frozenset({"conversations", "messages", "prompt", "completion", "label"})
LISTED = frozenset({"conversations", "openai"})  # formats whose turns are one list: {key: [turns], "label", ...}
MASK_64 = 0xFFFF_FFFF_FFFF_FFFF  # a hash as the unsigned 64 bits the scan's arrays hold
TOO_DEEP = "JSON nested too deeply (about a thousand levels of [ or { or more); no row needs that"


@dataclass(slots=True)
class Example:
    """One usable row: ``line`` is its 1-based line number in the file."""

    line: int
    prompt: list[Message]
    completion: Message
    label: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "conversations"
    row_hash: int = 0  # of the row's content: equal for exact duplicates (within one process: _row_hash)
    invalid_tool_args: int = 0
    prompt_hash: int = 0  # of the prompt turns: equal for equal prompts (conflicting labels), within one process


def normalise(obj: Any, fmt: str | None = None, parsed_by_orjson: bool = False) -> Example:
    """One parsed row as an Example (line set by the caller), or RowError; ``fmt`` is the file's format."""
    row_fmt = detect(obj)
    if fmt is not None and row_fmt != fmt:
        raise RowError("mixed_format", f"row is in {row_fmt} format but the file is {fmt}")
    label = label_of(obj)
    raw = messages_of(obj, row_fmt)
    merged = plain_turns(raw)
    plain = merged is not None
    if merged is None:  # not plain text turns that alternate (tool calls, errors...): checked turn by turn
        merged = _checked_turns(raw)
    completion = merged[-1]
    if not completion["content"].strip():
        raise RowError("empty_completion", "the last assistant turn is empty")
    bad_args = 0
    for m in merged:
        if m["role"] == "assistant":
            bad_args += invalid_tool_args(m["content"])
    metadata = {k: v for k, v in obj.items() if k not in NOT_METADATA}
    prompt = merged[:-1]
    prompt_hash = hash(tuple([(m["role"], m["content"]) for m in prompt]))
    # the turns hash where the row is its turns (each just {role, content}), its label and scalar metadata
    scalars = _scalars(metadata) if plain and parsed_by_orjson and row_fmt in LISTED \
        and len(obj) == len(metadata) + 2 and all([len(m) == 2 for m in raw]) else None
    if scalars is not None:
        row_hash = _turns_hash(row_fmt, label, scalars, prompt_hash, completion["content"])
    else:
        row_hash = _row_hash(_canonical(obj, parsed_by_orjson))
    return Example(0, prompt, completion, label, metadata, row_fmt, row_hash, bad_args, prompt_hash & MASK_64)


def _checked_turns(raw: list[Any]) -> list[Message]:
    """The merged turns of any row, each error told in the order users have always seen them."""
    last_role = raw[-1].get("role") if isinstance(raw[-1], dict) else None
    if last_role != "assistant":  # a row with no assistant turn at all is told so first
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in raw):
            raise RowError("no_assistant_turn", "no assistant turn")
        raise RowError("last_turn_not_assistant", f"the last turn is from {last_role!r}, not the assistant")
    merged = turns(raw)
    check_alternation(merged)
    return merged


def _row_hash(data: bytes) -> int:
    """64 bits equal for equal rows. Python's own keyed hash (SipHash, randomised per process): a row's hash
    is compared only with rows of the same check (whose worker processes share their parent's key: see
    ``report.scan_parallel``), never stored, and this is several times cheaper than blake2b, which was a tenth
    of a check's time."""
    return hash(data) & MASK_64


def _turns_hash(fmt: str, label: bool, scalars: tuple[tuple[str, str, Any], ...], prompt_hash: int,
                completion: str) -> int:
    """_row_hash's counterpart for the common row: {"conversations" or "messages": [{role, content}...], "label"}
    and top-level fields whose values are scalars (an id, a source...: ``_scalars``). Such a row is fully told
    by its format, its label, those fields, its prompt turns (``prompt_hash``: their roles and texts) and its
    completion's text, so those are hashed where they lie, without writing the row out again as sorted JSON (the
    largest single cost of a check after parsing). Rows equal as JSON are both of this shape or both not, so
    equal rows still get equal hashes."""
    return hash((fmt, label, scalars, prompt_hash, completion)) & MASK_64


SCALAR_TAGS = {str: "s", int: "i", bool: "b", type(None): "n"}  # JSON's 1, 1.0, true and "1" differ: so do the tags


def _scalars(metadata: dict[str, Any]) -> tuple[tuple[str, str, Any], ...] | None:
    """The row's other fields, as sorted (name, type tag, value), when each value is a scalar (a float by its
    repr: -0.0 is not 0.0 in JSON); None when one is a list or an object."""
    fields = []
    for key, value in metadata.items():
        tag = SCALAR_TAGS.get(type(value))
        if tag is None:
            if type(value) is not float:
                return None
            tag, value = "f", repr(value)
        fields.append((key, tag, value))
    return tuple(sorted(fields))


def _canonical(obj: Any, parsed_by_orjson: bool) -> bytes:
    """The row as JSON with sorted keys: equal for rows equal as JSON, whatever their key order or spacing."""
    canonical = _orjson_canonical(obj) if parsed_by_orjson else None
    if canonical is None:  # called from here, as before: a nesting near the limit fails (or not) as it did
        canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()
    return canonical


def _orjson_canonical(obj: Any) -> bytes | None:
    """The row as JSON with sorted keys (equal for rows equal as JSON, whatever their key order or spacing), or
    None where orjson cannot write it (nested deeper than 254 levels). Only rows orjson parsed come here: one
    only the standard library parsed (NaN, which orjson would write as null; integers past 64 bits) is written
    by the standard library."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None


def iter_rows(path: str | Path, start: int = 0, end: int | None = None, fmt: str | None = None
              ) -> Generator[tuple[int, Example | RowError], None, int]:
    """Yield (line number, Example or the RowError of that line); blank lines are skipped. Returns the number
    of lines read.

    ``start``/``end`` (byte offsets at line starts) read one part of the file, numbering its lines from 1, with
    ``fmt`` the format of the file's first usable row (``ktoforge.dataset.parallel`` checks parts at once).
    """
    lineno = 0
    with open(path, "rb") as fh:
        for raw in _lines(fh, start, end):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:  # its newline counted
                yield lineno, RowError("line_too_long", f"line is {len(raw) >> 20} MiB; the limit is "
                                       f"{MAX_LINE_BYTES >> 20} MiB per row")
                continue
            try:
                obj, fast = orjson.loads(raw), True  # valid JSON in valid UTF-8: most lines, one C call
            except orjson.JSONDecodeError:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield lineno, RowError("not_utf8", f"not UTF-8 (byte {raw[exc.start]:#04x} at column "
                                           f"{exc.start + 1}); save the file as UTF-8")
                    continue
                if not text.strip():
                    continue
                try:
                    obj, fast = _strict_loads(text), False
                except RowError as err:
                    yield lineno, err
                    continue
            try:
                example = _example(obj, fmt, fast)
            except RowError as err:
                yield lineno, err
                continue
            fmt = example.format
            example.line = lineno
            yield lineno, example
    return lineno


def _lines(fh: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    """The lines of ``fh`` from byte ``start`` to ``end`` (None: its end), each with its newline (the last one
    may have none).

    Read in blocks and split in C: a file's lines one ``readline`` at a time were a tenth of a check's time.
    A block's lines come from ``BytesIO.readlines``, which finds each newline with memchr: twice the speed of
    ``bytes.split``, which compares byte by byte (measured: 0.29 against 0.63 µs a line).
    """
    fh.seek(start)
    left, rest = (None if end is None else end - start), b""
    while left is None or left > 0:
        block = fh.read(READ_BLOCK if left is None else min(READ_BLOCK, left))
        if not block:
            break
        if left is not None:
            left -= len(block)
        lines = io.BytesIO(rest + block).readlines()
        rest = lines.pop() if not lines[-1].endswith(b"\n") else b""
        yield from lines
    if rest:
        yield rest


def _example(obj: Any, fmt: str | None, fast: bool) -> Example:
    """A parsed row as an Example, or RowError; a nesting too deep to hash is its line's error too.

    Python's json recurses once per nesting level, so a line of 200k ``[`` raises RecursionError (not a
    JSONDecodeError); a nesting just under the limit can still raise it later, when the row is hashed.
    """
    try:
        return normalise(obj, fmt, fast)
    except RecursionError:
        raise RowError("too_deeply_nested", TOO_DEEP) from None
    except UnicodeEncodeError as exc:  # JSON may escape half a UTF-16 pair ("\ud800"): not text, nothing can encode it
        raise RowError("not_utf8", f"holds {exc.object[exc.start:exc.end]!r}, half of a UTF-16 surrogate pair, which "
                       "is not a character; fix the escape in this line") from None


def _strict_loads(text: str) -> Any:
    """The standard library's verdict on a line orjson refused: the same error messages as ever."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError("invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise RowError("too_deeply_nested", TOO_DEEP) from None


def load_examples(path: str | Path) -> list[Example]:
    """Every valid example of a file (invalid lines are the report's business, not training's)."""
    return [item for _, item in iter_rows(path) if isinstance(item, Example)]

"""A file checked in parts, one process each, gives exactly the report of one pass: errors, line numbers,
duplicates and conflicts across parts, token lengths, skipped lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ktoforge.dataset.parallel import MAX_PROCESSES, PARALLEL_MIN_BYTES, _line_starts, processes_for
from ktoforge.dataset.report import build_report


def conv(prompt: str, answer: str, label: bool, **extra: object) -> str:
    return json.dumps({"conversations": [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": answer}], "label": label, **extra})


def mixed_rows(n: int) -> list[str]:
    """Good rows with, every few lines, an error, a blank line, a duplicate of an early row, a prompt seen with
    the other label, a long row, bad tool-call arguments, a key-order variant of an earlier row."""
    lines = []
    for i in range(n):
        lines.append(conv(f"question {i}", f"answer {i} " * (1 + i % 7), i % 3 != 0, id=i))
        if i % 11 == 5:
            lines.append('{"conversations": [], "label": true}')  # no_conversation
        if i % 13 == 7:
            lines.append("")
            lines.append("{not json")
        if i % 17 == 9:
            lines.append(conv("question 1", "answer 1 answer 1 ", True, id=1))  # duplicate of line 2
        if i % 19 == 3:
            lines.append(conv(f"question {i}", "the other label", i % 3 == 0))  # conflicting labels
        if i % 23 == 4:
            lines.append(conv(f"long {i}", "word " * 300, True))
        if i % 29 == 8:
            lines.append(conv(f"tool {i}", 'tool_call: mk\narguments: {"a": ', False))
        if i % 31 == 2:
            lines.append(json.dumps({"label": True, "id": 0, "conversations": [
                {"content": "question 0", "role": "user"}, {"content": "answer 0 ", "role": "assistant"}]}))
    return lines


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(mixed_rows(400)) + "\n")
    return path


@pytest.mark.parametrize("processes", [2, 3, 5])
@pytest.mark.parametrize("on_error", ["reject", "skip"])
def test_parts_give_the_report_of_one_pass(mixed_file: Path, processes: int, on_error: str) -> None:
    one = build_report(mixed_file, on_error=on_error, processes=1)
    parts = build_report(mixed_file, on_error=on_error, processes=processes)
    assert parts.model_dump() == one.model_dump()
    kinds = {w.kind for w in one.warnings}
    assert {"duplicate_rows", "conflicting_labels", "tool_call_arguments_invalid"} <= kinds
    assert one.error_count > 60 and {"no_conversation", "invalid_json"} <= set(one.error_counts)


def test_token_lengths_and_too_long_rows_merge_alike(mixed_file: Path, tiny_model_dir: Path) -> None:
    one = build_report(mixed_file, model_dir=tiny_model_dir, max_length=64, processes=1)
    parts = build_report(mixed_file, model_dir=tiny_model_dir, max_length=64, processes=4)
    assert parts.model_dump() == one.model_dump()
    assert one.stats["rows_truncated"] > 0 and "too_long" in {w.kind for w in one.warnings}


def test_line_numbers_count_every_line_of_earlier_parts(tmp_path: Path) -> None:
    lines = [conv(f"q{i}", "a", True) for i in range(300)]
    lines[250] = "{oops"  # line 251, in the last part
    lines[120] = ""  # a blank line still counts
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last line
    report = build_report(path, processes=3)
    assert [(e.line, e.kind) for e in report.errors] == [(251, "invalid_json")]
    assert report.rows == 298


def test_a_first_part_without_a_usable_row_falls_back_to_one_pass(tmp_path: Path) -> None:
    """The file's format is its first usable row's; when the first part has none, parts can't be told it."""
    lines = ['{"label": true}'] * 200 + [conv("q", "a", True)] + [json.dumps({"prompt": "p", "completion": "c",
                                                                               "label": False})] * 50
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    one, parts = build_report(path, processes=1), build_report(path, processes=3)
    assert parts.model_dump() == one.model_dump()
    assert one.error_counts == {"unknown_format": 200, "mixed_format": 50}


def test_only_large_files_are_split_by_default(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(conv("q", "a", True) + "\n")
    assert processes_for(small, None) == 1
    assert processes_for(small, 3) == 3
    big = tmp_path / "big.jsonl"
    with big.open("wb") as fh:
        fh.truncate(PARALLEL_MIN_BYTES)
    assert processes_for(big, None) == min(MAX_PROCESSES, len(os.sched_getaffinity(0)))


def test_parts_start_at_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    data = b"".join(b"x" * (i % 50) + b"\n" for i in range(500))
    path.write_bytes(data)
    bounds = _line_starts(path, 4)
    assert bounds[0] == 0 and bounds[-1] == len(data) and bounds == sorted(set(bounds)) and len(bounds) == 5
    assert all(data[b - 1:b] == b"\n" for b in bounds[1:-1])
    one_line = tmp_path / "one.jsonl"
    one_line.write_bytes(b"y" * 1000)
    assert _line_starts(one_line, 4) == [0, 1000]

"""Checking a large dataset file in parts, one process per core, merged into the one report a single pass gives.

A check is Python work per row (parse, turns, tool-call arguments, hashes): one core does about 30k rows/s, so a
100k-row upload took seconds while the other cores idled. The file is cut at line starts into one part per
process; each part is checked by ``scan.Scan`` in a forked child, and the parts' Scans are merged in file
order, their line numbers shifted by the lines before them (each part counts its own).

Why the result equals a single pass:
- the file's format is its first usable row's: that row is found here first, and parts after the first are
  checked against it (the first part finds it itself, as a single pass does); when the first part holds no
  usable row, the file is checked in one pass instead;
- duplicate and conflict hashes use Python's keyed hash, and forked children share their parent's key;
- errors and example lines are kept in file order, then capped, as a single pass caps them.
Processes are forked (Linux): spawned ones would each hash with their own key and import everything again.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

from ktoforge.dataset.examples import Example, iter_rows
from ktoforge.dataset.scan import Scan

PARALLEL_MIN_BYTES = 8 << 20  # below this a check takes well under a second: forking would cost more than it saves
MAX_PROCESSES = 8
BLOCK = 1 << 20
T = TypeVar("T")


def processes_for(path: Path, wanted: int | None) -> int:
    """How many processes check ``path``: ``wanted`` if given (0 or None: one per core we may use, for a file
    of at least PARALLEL_MIN_BYTES), 1 where fork is not available."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if wanted:
        return max(1, wanted)
    if path.stat().st_size < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(MAX_PROCESSES, len(os.sched_getaffinity(0))))


def scan_file(path: Path, spec: Scan.Spec, processes: int | None) -> Scan:
    """The whole file's Scan, from ``processes`` parts checked at once (one pass here when that is 1)."""
    n = processes_for(Path(path), processes)
    bounds = _line_starts(Path(path), n) if n > 1 else []
    fmt = _first_format(path, bounds[1]) if len(bounds) > 2 else None
    if fmt is None:  # one part, or no usable row in the first part: one pass
        return Scan(spec).run(iter_rows(path))
    parts = list(pairwise(bounds))
    with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("fork"),
                             initializer=_in_child) as pool:
        futures = [pool.submit(_scan_part, path, start, end, None if i == 0 else fmt, spec)
                   for i, (start, end) in enumerate(parts)]
        (whole, offset), *rest = [f.result() for f in futures]
    for scan, lines in rest:
        whole.extend(scan, offset)
        offset += lines
    return whole


def _scan_part(path: Path, start: int, end: int, fmt: str | None, spec: Scan.Spec) -> tuple[Scan, int]:
    """One part's Scan, and how many lines the part holds (the next part's lines come after them)."""
    lines: list[int] = []
    return Scan(spec).run(_counted(iter_rows(path, start, end, fmt), lines)), lines[0]


def _counted(rows: Generator[T, None, int], out: list[int]) -> Iterator[T]:
    """``rows``, then what the generator returned (the lines it read) appended to ``out``."""
    out.append((yield from rows))


def _in_child() -> None:
    """Each part's process tokenizes on its own core: the Rust tokenizer's threads would only compete."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _first_format(path: Path, end: int) -> str | None:
    """The format of the file's first usable row, if it lies before byte ``end``."""
    for _, item in iter_rows(path, 0, end):
        if isinstance(item, Example):
            return item.format
    return None


def _line_starts(path: Path, n: int) -> list[int]:
    """Byte offsets cutting the file into ``n`` parts near equal in size, each cut at a line start; the
    first is 0 and the last the file's size (fewer parts where lines are longer than a part)."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as fh:
        for k in range(1, n):
            pos = max(size * k // n, bounds[-1])
            fh.seek(pos)
            while (block := fh.read(BLOCK)) and (i := block.find(b"\n")) < 0:
                pos += len(block)
            pos = min(size, pos + i + 1) if block else size
            if bounds[-1] < pos < size:
                bounds.append(pos)
    return bounds + [size]

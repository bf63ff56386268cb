"""Where the dataset check's CPU time per row goes, in one process, on bench/dataset_bench.py's rows: each part
switched off in turn (cumulatively: the line says what the others left cost), then reading and parsing alone.

A part is switched off by replacing the function that does it with one returning a constant, in this process
only: the check's result is then wrong, the time is what matters. CPU time, best of 5 over 30,000 rows.
Run: .venv/bin/python bench/profile_dataset.py [--out bench/profiles/dataset_parts.txt]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from dataset_bench import make_file
from harness import publish

ROWS = 30_000


def us_per_row(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best / ROWS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the lines to this file")
    args = parser.parse_args()

    from ktoforge.dataset import examples
    from ktoforge.dataset.scan import Scan

    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp), ROWS)
        spec = Scan.Spec(None, 1024, "report")
        scan = lambda: Scan(spec).run(examples.iter_rows(path))  # noqa: E731
        lines = [f"# dataset check, one process, CPU time per row (best of 5, {ROWS} rows of dataset_bench.py)"]
        previous = us_per_row(scan)
        lines.append(f"whole check (scan of every row)             {previous:5.2f} us")
        switches = [("tool-call argument check", "invalid_tool_args", lambda text: 0),  # names examples calls
                    ("row hash (turns and scalar fields)", "_turns_hash", lambda *a: 1),
                    ("plain-turn check", "plain_turns", lambda raw: raw)]
        for name, attr, constant in switches:
            setattr(examples, attr, constant)
            now = us_per_row(scan)
            lines.append(f"  {name:42s} {previous - now:5.2f} us")
            previous = now
        lines.append(f"  {'the rest (parse, read, tallies, calls)':42s} {previous:5.2f} us")

        def read() -> None:
            with open(path, "rb") as fh:
                for _ in examples._lines(fh, 0, None):
                    pass

        def parse() -> None:
            with open(path, "rb") as fh:
                for raw in examples._lines(fh, 0, None):
                    orjson.loads(raw)

        reading = us_per_row(read)
        lines.append(f"    of which reading lines                   {reading:5.2f} us")
        lines.append(f"    of which parsing them with orjson        {us_per_row(parse) - reading:5.2f} us")
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

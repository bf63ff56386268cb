"""Dataset validation speed and memory: our streamed report vs `datasets.load_dataset("json")`, same file.

Generates a 100k-row file from the reference dataset (../shared/datasets), measures both side by side in
one run, and prints one `name value` line per figure. Peak memory is measured in a fresh child process
(tracemalloc's peak of Python allocations during validation, and the child's whole max RSS), so it is ours
alone. Flat memory means the peak does not grow with the file: compare with the 155 MiB file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
ROWS = 100_000


def make_file(folder: Path) -> Path:
    lines = [line for line in REFERENCE.read_text().splitlines() if line.strip()]
    path = folder / "rows100k.jsonl"
    with path.open("w") as fh:
        for i in range(ROWS):
            fh.write(lines[i % len(lines)] + "\n")
    return path


def peak_memory_mib(path: Path, with_tokens: bool) -> tuple[float, float]:
    """(peak Python allocations during validation, max RSS of the whole child) in MiB."""
    code = f"""
import resource, tracemalloc
from pathlib import Path
from ktoforge.dataset.report import build_report
from ktoforge.builtin_model import builtin_path
model = builtin_path("builtin:tiny-mistral", Path({str(ROOT / "var" / "models")!r})) if {with_tokens} else None
tracemalloc.start()
build_report(Path({str(path)!r}), model_dir=model)
print(tracemalloc.get_traced_memory()[1] / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    traced, rss = out.stdout.split()
    return float(traced), float(rss)


def main() -> None:
    from datasets import load_dataset

    from ktoforge.builtin_model import builtin_path
    from ktoforge.dataset.report import build_report

    model = builtin_path("builtin:tiny-mistral", ROOT / "var" / "models")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp))
        t0 = time.perf_counter()
        report = build_report(path)
        ours = time.perf_counter() - t0
        assert report.rows == ROWS
        t0 = time.perf_counter()
        with_tokens = build_report(path, model_dir=model)
        ours_tokens = time.perf_counter() - t0
        assert with_tokens.stats["tokens"]["max"] > 0
        t0 = time.perf_counter()
        hf = load_dataset("json", data_files=str(path), cache_dir=str(Path(tmp) / "hf-cache"), split="train")
        theirs = time.perf_counter() - t0
        assert len(hf) == ROWS
        print(f"dataset_rows {ROWS}")
        print(f"dataset_file_mib {path.stat().st_size / 2**20:.1f}")
        print(f"dataset_validate_rows_per_s {ROWS / ours:.0f}")
        print(f"dataset_validate_with_tokens_rows_per_s {ROWS / ours_tokens:.0f}")
        print(f"hf_load_dataset_rows_per_s {ROWS / theirs:.0f}")
        print(f"validate_over_hf_ratio {theirs / ours:.2f}")
        traced, rss = peak_memory_mib(path, False)
        print(f"validate_peak_mem_mib_100k {traced:.1f}")
        print(f"validate_process_maxrss_mib_100k {rss:.0f}")
        traced, rss = peak_memory_mib(path, True)
        print(f"validate_with_tokens_peak_mem_mib_100k {traced:.1f}")
        print(f"validate_with_tokens_process_maxrss_mib_100k {rss:.0f}")


if __name__ == "__main__":
    main()

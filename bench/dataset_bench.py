"""Dataset validation speed and memory: our streamed report vs `datasets.load_dataset("json")`, same file.

Generates a 100k-row file from the reference dataset (datasets/ in the repository), measures both side by side in
one run, and prints one `name value` line per figure. Peak memory is measured in a fresh child process:
tracemalloc's peak of Python allocations during validation, and the growth of the child's resident high-water
mark (VmHWM; ru_maxrss would report the parent's, as Linux carries it across fork+exec). Flat memory means
the 100k-row peak stays close to the 10k-row one, and far below the file's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
MODELS = ROOT / "var" / "models"
ROWS = 100_000

CHILD = """
import sys, tracemalloc
from pathlib import Path
from ktoforge.dataset.report import build_report
from ktoforge.builtin_model import builtin_path

def hwm_mib():
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return int(status.split()[0]) / 1024

path, models, with_tokens = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
model = builtin_path("builtin:tiny-mistral", models) if with_tokens else None
before = hwm_mib()
tracemalloc.start()
build_report(path, model_dir=model)
print(tracemalloc.get_traced_memory()[1] / 2**20, hwm_mib() - before)
"""


def make_file(folder: Path, rows: int) -> Path:
    """Reference rows, each made unique (its own prompt and id), so no hash set stays small by repetition."""
    base = [json.loads(line) for line in REFERENCE.read_text().splitlines() if line.strip()]
    path = folder / f"rows{rows}.jsonl"
    with path.open("w") as fh:
        for i in range(rows):
            row = base[i % len(base)]
            first, *rest = row["conversations"]
            unique = [{**first, "content": f"{first['content']} (#{i})"}, *rest]
            fh.write(json.dumps({**row, "conversations": unique, "id": i}) + "\n")
    return path


def peak_memory_mib(path: Path, with_tokens: bool) -> tuple[float, float]:
    """(peak Python allocations during validation, growth of the child's resident high-water mark) in MiB."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(MODELS), "1" if with_tokens else "0"],
                         capture_output=True, text=True, check=True)
    traced, rss = out.stdout.split()
    return float(traced), float(rss)


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def main() -> None:
    from datasets import load_dataset

    from ktoforge.builtin_model import builtin_path
    from ktoforge.dataset.report import build_report

    model = builtin_path("builtin:tiny-mistral", MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        path, small = make_file(Path(tmp), ROWS), make_file(Path(tmp), ROWS // 10)
        report, ours = timed(build_report, path)
        assert report.rows == ROWS
        with_tokens, ours_tokens = timed(build_report, small, model_dir=model)  # the rate; 10k rows suffice
        assert with_tokens.stats["tokens"]["max"] > 0
        hf, theirs = timed(load_dataset, "json", data_files=str(path), cache_dir=str(Path(tmp) / "hf-cache"),
                           split="train")
        assert len(hf) == ROWS
        print(f"dataset_rows {ROWS}")
        print(f"dataset_file_mib {path.stat().st_size / 2**20:.1f}")
        print(f"dataset_validate_rows_per_s {ROWS / ours:.0f}")
        print(f"dataset_validate_with_tokens_rows_per_s {with_tokens.rows / ours_tokens:.0f}")
        print(f"hf_load_dataset_rows_per_s {ROWS / theirs:.0f}")
        print(f"dataset_vs_load_dataset_ratio {theirs / ours:.2f}")
        for rows, file in ((ROWS // 10, small), (ROWS, path)):
            tag = f"{rows // 1000}k"
            traced, rss = peak_memory_mib(file, False)
            print(f"validate_peak_mem_mib_{tag} {traced:.1f}")
            print(f"validate_rss_growth_mib_{tag} {rss:.1f}")
            if rows == ROWS:
                print(f"dataset_peak_mb_100k {rss:.1f}")  # the whole process's growth, not only Python's
        traced, rss = peak_memory_mib(path, True)
        print(f"validate_with_tokens_peak_mem_mib_100k {traced:.1f}")
        print(f"validate_with_tokens_rss_growth_mib_100k {rss:.1f}")


if __name__ == "__main__":
    main()

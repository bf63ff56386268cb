"""Dataset validation speed and memory: our streamed report vs `datasets.load_dataset("json")`, same file.

Generates a 100k-row file from the reference dataset (datasets/ in the repository), measures both side by side in
one run (alternated, best of 5 each), and prints one `name value` line per figure. A large file is checked by
one process per core (ktoforge.dataset.parallel); `dataset_validate_one_process_rows_per_s` is the rate of one.
The CPU time each takes per row (dataset_cpu_us_per_row, hf_load_dataset_cpu_us_per_row, and their ratio,
dataset_cpu_vs_load_dataset_ratio) says how much of the wall-time ratio rests on our second core: load_dataset
runs on about one core (its threads' CPU time is close to its wall time), our check on all of them.
Peak memory is measured in a fresh child process: tracemalloc's peak of Python allocations in that process
during validation, and the peak growth of its resident memory plus what its part processes hold privately,
sampled every 10 ms. Flat memory means the 100k-row peak stays close to the 10k-row one, and far below the
file's size.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
MODELS = ROOT / "var" / "models"
ROWS = 100_000
REPEATS = 5

CHILD = """
import sys, threading, time, tracemalloc
from pathlib import Path
from ktoforge.dataset.report import build_report
from ktoforge.builtin_model import builtin_path

def kib(text, key):
    return int(text.split(key + ":")[1].split()[0])

def resident_mib():
    # this process's resident memory, and what each child (a part's process) holds privately: the pages it
    # shares with this one, copy-on-write since the fork, are counted once, here
    total = kib(Path("/proc/self/status").read_text(), "VmRSS")
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                total += kib(rollup, "Private_Clean") + kib(rollup, "Private_Dirty")
            except (OSError, IndexError):
                pass  # the child ended meanwhile
    return total / 1024

path, models, with_tokens = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
model = builtin_path("builtin:tiny-mistral", models) if with_tokens else None
before, peak, done = resident_mib(), [0.0], threading.Event()

def sample():
    while not done.wait(0.01):
        peak[0] = max(peak[0], resident_mib())

sampler = threading.Thread(target=sample)
sampler.start()
tracemalloc.start()
build_report(path, model_dir=model)
traced = tracemalloc.get_traced_memory()[1] / 2**20
done.set()
sampler.join()
print(traced, max(peak[0], resident_mib()) - before)
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


def cpu_seconds() -> float:
    """CPU time of this process (its threads included) and of its ended children (the check's part processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_cpu(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, wall seconds, CPU seconds): load_dataset's threads and our part processes both counted."""
    c0 = cpu_seconds()
    result, seconds = timed(fn, *args, **kwargs)
    return result, seconds, cpu_seconds() - c0


def main() -> None:
    from datasets import disable_progress_bars, load_dataset

    from ktoforge.builtin_model import builtin_path
    from ktoforge.dataset.parallel import processes_for
    from ktoforge.dataset.report import build_report

    disable_progress_bars()
    model = builtin_path("builtin:tiny-mistral", MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        path, small = make_file(Path(tmp), ROWS), make_file(Path(tmp), ROWS // 10)
        ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
        for i in range(REPEATS):  # alternated, so that load on the shared cores hits both alike; best of each
            report, seconds, cpu = timed_cpu(build_report, path)
            assert report.rows == ROWS
            ours.append(seconds)
            ours_cpu.append(cpu)
            hf, seconds, cpu = timed_cpu(load_dataset, "json", data_files=str(path), split="train",
                                         cache_dir=str(Path(tmp) / f"hf-cache-{i}"))  # a fresh cache: parsed each time
            assert len(hf) == ROWS
            theirs.append(seconds)
            theirs_cpu.append(cpu)
        with_tokens, ours_tokens = timed(build_report, small, model_dir=model)  # the rate; 10k rows suffice
        assert with_tokens.stats["tokens"]["max"] > 0
        print(f"dataset_rows {ROWS}")
        print(f"dataset_file_mib {path.stat().st_size / 2**20:.1f}")
        print(f"dataset_check_processes {processes_for(path, None)}")
        print(f"dataset_validate_rows_per_s {ROWS / min(ours):.0f}")
        print(f"dataset_validate_one_process_rows_per_s {ROWS / timed(build_report, path, processes=1)[1]:.0f}")
        print(f"dataset_validate_with_tokens_rows_per_s {with_tokens.rows / ours_tokens:.0f}")
        print(f"hf_load_dataset_rows_per_s {ROWS / min(theirs):.0f}")
        print(f"dataset_vs_load_dataset_ratio {min(theirs) / min(ours):.2f}")
        print(f"dataset_cpu_us_per_row {min(ours_cpu) / ROWS * 1e6:.2f}")  # both processes' CPU time
        print(f"hf_load_dataset_cpu_us_per_row {min(theirs_cpu) / ROWS * 1e6:.2f}")
        print(f"dataset_cpu_vs_load_dataset_ratio {min(theirs_cpu) / min(ours_cpu):.2f}")  # work per row: theirs/ours
        for rows, file in ((ROWS // 10, small), (ROWS, path)):
            tag = f"{rows // 1000}k"
            traced, rss = peak_memory_mib(file, False)
            print(f"validate_peak_mem_mib_{tag} {traced:.1f}")
            print(f"validate_rss_growth_mib_{tag} {rss:.1f}")
            if rows == ROWS:
                print(f"dataset_peak_mb_100k {rss:.1f}")  # every process's growth, not only Python's
        traced, rss = peak_memory_mib(small, True)
        print(f"validate_with_tokens_peak_mem_mib_10k {traced:.1f}")
        print(f"validate_with_tokens_rss_growth_mib_10k {rss:.1f}")


if __name__ == "__main__":
    main()

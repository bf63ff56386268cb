"""What every benchmark shares: `name value` output, percentiles, a small dataset, and local mode to measure.

Each script in bench/ measures one figure (or one pair) side by side in one run and prints `name value` lines;
`bench/run_all.py` (what `make bench` runs) collects them into bench/RESULTS.md. Timings on these shared cores
are noisy, so scripts report ratios and medians of repeats, never a single run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the system harness of the tests (tests/system.py) starts local mode

from tests.conftest import REFERENCE_DATASET  # noqa: E402  (the repository's own copy)

MODELS = ROOT / "var" / "models"


def emit(name: str, value: float, fmt: str = ".3f") -> None:
    """One figure, the only format run_all.py reads."""
    print(f"{name} {value:{fmt}}", flush=True)


def publish(text: str, out: Path | None) -> None:
    """A profile script's report: printed, and written to ``out`` (bench/profiles/...) when given."""
    print(text, end="" if text.endswith("\n") else "\n")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 50 samples p99 is the largest but none, not an interpolation."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def small_dataset(folder: Path, rows: int) -> Path:
    """The first ``rows`` lines of the reference dataset with both labels kept (KTO needs each in a batch)."""
    lines = [line for line in REFERENCE_DATASET.read_text().splitlines() if line.strip()]
    good = [line for line in lines if json.loads(line)["label"]]
    bad = [line for line in lines if not json.loads(line)["label"]]
    picked = [row for pair in zip(good, bad) for row in pair][:rows]
    path = folder / f"bench-{rows}.jsonl"
    path.write_text("\n".join(picked) + "\n")
    return path


def wait_worker_idle(system, children: int, quiet_s: float = 1.0, timeout: float = 300) -> float:
    """Wait until the torch worker's ``children``-th pool child has imported the training stack (one child per
    job: after n jobs, the n + 1-th; KTOFORGE_WORKER_PREWARM) and its processes used under 2 % of a core for
    ``quiet_s``; the seconds waited. A run started while a new child imports would share the cores with it (a
    direct run made slower, a job kept waiting), so each timed run starts on a ready, quiet worker."""
    import time

    import psutil

    from tests.system import TORCH_WORKER

    def cpu() -> float:
        total = 0.0
        for pid in system.pids(TORCH_WORKER):
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    start = time.time()
    system.prewarmed_child(children, timeout)
    used = cpu()
    while time.time() - start < timeout:
        time.sleep(quiet_s)
        now = cpu()
        if now - used < 0.02 * quiet_s:
            return time.time() - start
        used = now
    raise TimeoutError(f"the torch worker was still busy after {timeout:.0f} s")

"""`make bench`: every benchmark script, one after the other, their `name value` lines printed and written to
bench/RESULTS.md with the machine, the date, the commit and each goal's verdict (missed: by how much).

Scripts run one at a time (they would otherwise share the two cores and measure each other), each once the
cores are idle again. The GPU check
runs only where torch sees a CUDA device; elsewhere its figures are written as "not measured".
Run: .venv/bin/python bench/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["queue_overhead.py", "submit_latency.py", "api_throughput.py", "list_cost.py", "dataset_bench.py",
           "mlx_vs_torch.py", "precompute_ref.py"]
GPU_SCRIPT = "gpu_check.py"
NOTES_MARK = "## Reading the figures"  # from this heading on, RESULTS.md is written by hand and kept
# figure: (comparison, goal, what the figure means)
GOALS: dict[str, tuple[str, float, str]] = {
    "queue_overhead_ratio": ("<=", 1.03, "wall time through API → Redis → Celery → worker (idle, its child "
                             "prewarmed) over the direct train call, at train_s of training (>= 30 s)"),
    "submit_latency_p50_s": ("<=", 0.5, "submit → running, idle worker (MLX), median of 50 jobs"),
    "submit_latency_p99_s": ("", 0, "submit → running, idle worker (MLX), 99th percentile of 50 jobs"),
    "api_rps": (">=", 1000, "GET /v1/jobs/{id}, wrk 32 connections, the API on one core"),
    "api_p99_ms": ("<=", 50, "GET /v1/jobs/{id}, 99th percentile latency"),
    "api_list_rps": (">=", 1000, "GET /v1/jobs (a page of 50 of 100 jobs), as api_rps is measured"),
    "api_list_p99_ms": ("<=", 50, "GET /v1/jobs, 99th percentile latency"),
    "api_list_10k_over_100_ratio": ("<=", 1.5, "GET /v1/jobs?limit=50 p50 at 10,000 stored jobs over 100"),
    "dataset_vs_load_dataset_ratio": (">=", 1.0, "dataset check rows/s over datasets.load_dataset('json'), 100k rows, "
                                      "one process per core"),
    "dataset_peak_mb_100k": ("", 0, "resident memory growth validating 100k rows, part processes included "
                             "(MiB): flat"),
    "mlx_kto_over_sft_ratio": ("", 0, "our MLX KTO step over mlx-lm's LoRA SFT step"),
    "torch_kto_over_sft_ratio": ("", 0, "TRL's KTO step over a torch LoRA SFT step"),
    "mlx_torch_step_ratio": ("<=", 0.8, "mlx_kto_over_sft_ratio / torch_kto_over_sft_ratio"),
    "precompute_ref_step_ratio": ("", 0, "torch KTO step time with precompute_ref_log_probs on / off"),
    "gpu_peak_vram_gb": ("", 0, "GPU check: peak VRAM, Mistral-7B shape, 4-bit, LoRA r16, batch 2, 1024 tokens"),
    "unsloth_speedup": ("", 0, "GPU check: step time plain transformers+peft over Unsloth"),
}


def settle(idle: float = 0.9, most_s: float = 30.0) -> None:
    """Wait until the cores are idle (at least ``idle`` of a second's CPU time, from /proc/stat), at most
    ``most_s``: what the previous script started (local mode's workers, Redis writing its file) may still be
    ending, and would be measured with the next script's figures."""
    def busy_idle() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    deadline = time.time() + most_s
    while time.time() < deadline:
        total0, idle0 = busy_idle()
        time.sleep(1)
        total1, idle1 = busy_idle()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= idle:
            return


def run(script: str) -> tuple[dict[str, float], float]:
    """The script's figures, and how long it took; a failing script stops the run (no partial RESULTS.md)."""
    settle()
    start = time.time()
    proc = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    figures = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].replace("_", "").isalnum():
            try:
                figures[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return figures, time.time() - start


def cuda_available() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def verdict(name: str, value: float) -> str:
    op, goal, _ = GOALS[name]
    if not op:
        return ""
    met = value <= goal if op == "<=" else value >= goal
    if met:
        return "met"
    off = abs(value / goal - 1) * 100
    return f"missed by {off:.1f} %" if off < 1 else f"missed by {off:.0f} %"  # never "by 0 %"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def uncommitted() -> str:
    """What the measured tree had beyond its commit (RESULTS.md itself aside), as the header says it: a run of a
    changed tree must not pass for a run of its commit."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                         cwd=HERE).stdout.splitlines()
    changed = [line[3:] for line in out if not line.endswith("bench/RESULTS.md")]
    return f" with uncommitted changes to {', '.join(changed)}" if changed else ""


def write_results(figures: dict[str, float], durations: dict[str, float], gpu: bool) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip() + uncommitted()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmark results", "", f"Written by `make bench` (bench/run_all.py) on {now}, commit {commit}.",
             f"Machine: {machine()}.", "", "```"]
    lines += [f"{name} {value:g}" for name, value in figures.items()]
    lines += ["```", "", "| figure | value | goal | verdict | what it is |", "|---|---|---|---|---|"]
    for name, (op, goal, what) in GOALS.items():
        if name in figures:
            value = f"{figures[name]:g}"
        else:
            value = "not measured (no GPU here)" if not gpu and name.startswith(("gpu_", "unsloth_")) else "missing"
        shown_goal = f"{op} {goal:g}" if op else ""
        lines.append(f"| `{name}` | {value} | {shown_goal} | "
                     f"{verdict(name, figures[name]) if name in figures else ''} | {what} |")
    lines += ["", "Seconds per script: " + ", ".join(f"{k} {v:.0f}" for k, v in durations.items()), ""]
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES_MARK):] if NOTES_MARK in old else ""
    path.write_text("\n".join(lines) + ("\n" + notes if notes else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="scripts to run (default: all); RESULTS.md is then not written")
    args = parser.parse_args()
    gpu = cuda_available()
    scripts = args.only or SCRIPTS + ([GPU_SCRIPT] if gpu else [])
    figures: dict[str, float] = {}
    durations: dict[str, float] = {}
    for script in scripts:
        found, durations[script] = run(script)
        for name, value in found.items():
            print(f"{name} {value:g}", flush=True)
        figures.update(found)
    if not args.only:
        write_results(figures, durations, gpu)


if __name__ == "__main__":
    main()

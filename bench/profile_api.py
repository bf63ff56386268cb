"""Where the API's time goes under wrk: py-spy's top frames and the garbage collector's pauses, as a small text.

The same setup as bench/api_throughput.py (100 jobs, one uvicorn process on core 0, wrk on core 1, 32
connections on GET /v1/jobs/{id}, or with `--list` on GET /v1/jobs). The API runs under a launcher that times
every collection of the garbage collector (gc.callbacks) before handing over to uvicorn; py-spy samples it
meanwhile. `--code DIR` runs the API from another copy of the repository (e.g. `git archive OLD services shared |
tar -x -C DIR`): the same script profiles the code before and after a change. Not part of `make bench`.
Run: .venv/bin/python bench/profile_api.py --out bench/profiles/api_after.txt [--code DIR] [--seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from api_throughput import start_api, stored_jobs, wrk
from harness import publish

from tests.conftest import RedisServer

# Runs uvicorn with a collector hook that rewrites GC_STATS, (end time, pause) per generation, after every 100th
# collection (the API is killed, not asked to exit, so nothing is written at exit), whole or not at all.
LAUNCHER = """
import gc, json, os, sys, time
stats, started = {}, [0.0]
def hook(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    stats.setdefault(info["generation"], []).append((time.time(), time.perf_counter() - started[0]))
    if sum(map(len, stats.values())) % 100 == 0:
        with open(os.environ["GC_STATS"] + ".new", "w") as fh:
            json.dump({"frozen": gc.get_freeze_count(), "pauses": stats}, fh)
        os.replace(os.environ["GC_STATS"] + ".new", os.environ["GC_STATS"])  # whole, though the API is killed
gc.callbacks.append(hook)
from uvicorn.main import main
sys.argv[0] = "uvicorn"
main()
"""
RUNNER_FRAMES = re.compile(r"runpy|click/|uvicorn/(main|server|_compat)\.py|asyncio/runners|threading\.py:10")


def summarise(raw: Path, gc_stats: Path, since: float, rps: float, p99: float, title: str, path: str) -> str:
    """Thread split, GC pauses after ``since`` (under load), top self and inclusive frames (launcher frames
    left out) of one recording."""
    import json

    own, inclusive, threads, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n, frames = int(count), stack.split(";")
        total += n
        threads["event loop" if "MainThread" in frames[0] else "threadpool"] += n
        frames = [re.sub(r" \(.*?site-packages/| \(/.*?/(?=[^/]+/[^/]+:)", " (", f) for f in frames[1:]]
        if frames:
            own[frames[-1]] += n
        for frame in {f for f in frames if not RUNNER_FRAMES.search(f)}:
            inclusive[frame] += n
    lines = [f"# {title}", f"wrk GET {path} while sampled: {rps:.0f} requests/s, p99 {p99:.1f} ms",
             f"py-spy samples: {total} ({', '.join(f'{k} {100 * v / total:.0f} %' for k, v in threads.items())})"]
    if gc_stats.exists():
        data = json.loads(gc_stats.read_text())
        lines.append(f"garbage collector under load (objects frozen at start: {data['frozen']}):")
        for gen, timed in sorted(data["pauses"].items()):
            pauses = [pause for end, pause in timed if end >= since] or [0.0]
            lines.append(f"  gen{gen}: {len(pauses)} collections, {1e3 * sum(pauses):.0f} ms in all, "
                         f"longest {1e3 * max(pauses):.1f} ms")
    lines.append("top frames by own samples (%):")
    lines += [f"  {100 * v / total:5.1f}  {k}" for k, v in own.most_common(12)]
    lines.append("top frames by inclusive samples (%):")
    lines += [f"  {100 * v / total:5.1f}  {k}" for k, v in inclusive.most_common(32)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--code", type=Path, help="a copy of the repository to run the API from")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--title", default="")
    parser.add_argument("--list", action="store_true", help="load GET /v1/jobs (a page of 50) instead")
    args = parser.parse_args()
    spy = Path(sys.executable).parent / "py-spy"
    if shutil.which("wrk") is None or not spy.exists():
        sys.exit("wrk and py-spy are needed: apt-get install wrk; pip install -r requirements/dev.txt")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        env = {"GC_STATS": f"{tmp}/gc.json"}
        if args.code:
            env["PYTHONPATH"] = f"{args.code}/services/api:{args.code}/shared"
        job_id, path = stored_jobs(server.url), "/v1/jobs" if args.list else "/v1/jobs/{id}"
        proc, url = start_api(server.url, Path(tmp) / "data", ("-c", LAUNCHER), env)
        try:
            raw = Path(tmp) / "profile.raw"
            record = subprocess.Popen([str(spy), "record", "-p", str(proc.pid), "-f", "raw", "-o", str(raw), "-r",
                                       "200", "-d", str(args.seconds + 2), "--threads", "--nonblocking"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            since = time.time()
            rps, p99 = wrk(f"{url}{path.replace('{id}', job_id)}", args.seconds)
            record.wait(60)
        finally:
            proc.kill()
            proc.wait(10)
            server.stop()
        title = args.title or f"API profile ({args.code or 'this tree'})"
        text = summarise(raw, Path(env["GC_STATS"]), since, rps, p99, title, path)
    publish(text, args.out)


if __name__ == "__main__":
    main()

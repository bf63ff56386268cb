"""Did KTO make SmolLM2-135M better at tool calls? A short KTO run on the reference dataset, then its
evaluation on held-out rows, base vs adapter, all through the product (local mode: API, Redis, a worker).

Run: .venv/bin/python bench/smollm2_eval.py [--backend cuda|mlx] [--steps 30] [--limit 16]
Prints `name value` lines (train time, final loss and margins, held-out eval loss, and each model's parse,
valid-JSON, right-tool and no-call rates) and copies the demo job's curves.png, eval_report.json/.md and
Modelfile to var/bench-smollm2/. Sized for the 2-core CPU machine: a step of SmolLM2 at max_length 256 and
batch 2 takes about 40-60 s of two idle cores (several times that on a busy machine), so the defaults (16
steps, 12 held-out prompts) aim at about 15 minutes; steps and lengths are flags for a GPU worker.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, emit

from tests.conftest import REFERENCE_DATASET
from tests.system import start_system, stop_system, upload, wait_status

OUT = ROOT / "var" / "bench-smollm2"
DEMO_FILES = ("curves.png", "eval_report.json", "eval_report.md", "Modelfile", "metrics.jsonl")


def job_body(dataset_id: str, args: argparse.Namespace) -> dict:
    """KTO on the builtin SmolLM2: LoRA on every projection, a held-out split for eval metrics and prompts."""
    return {"dataset_id": dataset_id, "model": "builtin:smollm2-135m", "backend": args.backend,
            "hyperparameters": {"max_steps": args.steps, "per_device_train_batch_size": args.batch,
                                "gradient_accumulation_steps": args.accum, "max_length": args.max_length,
                                "learning_rate": args.lr, "beta": 0.1, "eval_fraction": args.eval_fraction,
                                "save_steps": args.steps, "logging_steps": 1,  # one held-out eval, at the end
                                "gradient_checkpointing": False, "warmup_ratio": 0.1},
            "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}}


def last_metrics(client, job_id: str) -> tuple[dict, dict]:
    """(last train metrics, last eval metrics) from the job's events."""
    items = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 10000}).json()["items"]
    metrics = [e["data"] for e in items if e["type"] == "metrics"]
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_loss" in m]
    return (train[-1] if train else {}), (evals[-1] if evals else {})


def evaluate(client, job_id: str, limit: int, max_new_tokens: int, timeout: float) -> dict:
    ev = client.post(f"/v1/jobs/{job_id}/evaluations", json={"limit": limit, "max_new_tokens": max_new_tokens})
    assert ev.status_code == 202, ev.text
    ev = ev.json()
    deadline = time.time() + timeout
    while ev["status"] not in ("succeeded", "failed"):
        assert time.time() < deadline, f"evaluation stuck: {ev}"
        time.sleep(2)
        ev = client.get(f"/v1/jobs/{job_id}/evaluations/{ev['id']}").json()
    assert ev["status"] == "succeeded", ev["reason"]
    return client.get(f"/v1/jobs/{job_id}/artifacts/eval_report.json").json()


def keep_demo_files(client, job_id: str) -> list[str]:
    OUT.mkdir(parents=True, exist_ok=True)
    names = {a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()}
    for name in DEMO_FILES:
        if name in names:
            (OUT / name).write_bytes(client.get(f"/v1/jobs/{job_id}/artifacts/{name}").content)
    return sorted(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["cuda", "mlx"], default="cuda")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-fraction", type=float, default=0.03)
    parser.add_argument("--limit", type=int, default=12, help="held-out prompts evaluated")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still stops its system (finally)
    tmp = Path(tempfile.mkdtemp(prefix="smollm2-bench-"))
    system = start_system(tmp, [args.backend])
    try:
        with system.client() as client:
            dataset_id = upload(client, REFERENCE_DATASET)
            started = time.time()
            job = client.post("/v1/jobs", json=job_body(dataset_id, args))
            assert job.status_code in (200, 201), job.text
            job_id = job.json()["id"]
            done = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=3 * 3600)
            assert done["status"] == "succeeded", done.get("reason")
            emit("smollm2_train_s", time.time() - started, ".1f")
            emit("smollm2_steps", done["max_steps"], "d")
            train, held = last_metrics(client, job_id)
            for key in ("loss", "kl", "rewards/margins"):
                if key in train:
                    emit(f"smollm2_final_{key.replace('/', '_')}", train[key], ".4f")
            for key in ("eval_loss", "eval_rewards/margins"):
                if key in held:
                    emit(f"smollm2_{key.replace('/', '_')}", held[key], ".4f")
            started = time.time()
            report = evaluate(client, job_id, args.limit, args.max_new_tokens, timeout=3 * 3600)
            emit("smollm2_eval_s", time.time() - started, ".1f")
            emit("smollm2_eval_prompts", report["prompts"], "d")
            for model, summary in report["models"].items():
                for key in ("parses_rate", "arguments_valid_rate", "right_tool_rate", "no_call_rate"):
                    if summary[key] is not None:
                        emit(f"smollm2_{model}_{key}", summary[key], ".4f")
            names = keep_demo_files(client, job_id)
            print(f"# job {job_id}: artifacts {', '.join(names)}; demo files in {OUT}", flush=True)
            missing = {"curves.png", "eval_report.json", "Modelfile"} - set(names)
            return 1 if missing else 0
    finally:
        stop_system(system)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

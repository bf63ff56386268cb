"""``ktoforge demo`` (``make demo``): a first run in one command, from nothing to a downloaded adapter.

It uses a system that already answers (`make dev`, compose) and otherwise starts local mode itself, in its
own process group, and stops exactly that group at the end, whatever happened in between: a newcomer's
machine is left as it was found, apart from the adapter.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ktoforge.cli.client import EXIT_INTERRUPTED, Client
from ktoforge.cli.job import resolve_dataset
from ktoforge.cli.options import KeyOpt, UrlOpt, connected
from ktoforge.cli.watch import watch
from ktoforge.local import stop_group

REPO = Path(__file__).resolve().parents[3]
REFERENCE_DATASET = REPO / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"
# Short enough for a laptop CPU in about a minute, long enough for the curves to move.
DEMO_HYPERPARAMETERS = {"max_steps": 20, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                        "max_length": 256, "save_steps": 10, "learning_rate": 2e-3}
READY_TIMEOUT_S = 180.0


def start_local(log: Path, console: Console) -> subprocess.Popen:
    """`ktoforge up` as a new process group (so that stopping it reaches every child), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"no API answers: starting local mode (log: {log})", highlight=False)
    return subprocess.Popen([str(Path(sys.executable).parent / "ktoforge"), "up"], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(client: Client, proc: subprocess.Popen, log: Path) -> None:
    """Until /readyz shows a worker on the cuda queue (the one local mode always runs)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"local mode exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            ready = client.http.get("/readyz", timeout=3)
            if ready.status_code == 200 and ready.json().get("queues", {}).get("cuda", {}).get("ready"):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"local mode was not ready within {READY_TIMEOUT_S:.0f} s; see {log}")


def run_demo(client: Client, dataset: Path, to: Path, console: Console) -> int:
    """Upload, train the builtin model with the live bar, download: the exit code of the job."""
    dataset_id = resolve_dataset(client, str(dataset), console)
    job = client.json("POST", "/v1/jobs", json={"dataset_id": dataset_id, "model": "builtin:tiny-mistral",
                                                "backend": "cuda", "hyperparameters": DEMO_HYPERPARAMETERS})
    console.print(f"job {job['id']}: {DEMO_HYPERPARAMETERS['max_steps']} KTO steps of builtin:tiny-mistral",
                  highlight=False)
    code = watch(client, job["id"], console)
    if code != 0:
        return code
    folder = to / job["id"]
    files = client.download(job["id"], folder)
    adapter = next((f for f in files if f.name == "adapter_model.safetensors"), None)
    typer.echo(f"adapter: {(adapter or folder).resolve()}")  # one unwrapped line: scripts and tests read it
    return 0


def demo(
    dataset: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="JSONL to train on.")] = REFERENCE_DATASET,
    to: Annotated[Path, typer.Option(help="Where the adapter is downloaded.")] = Path("var/demo"),
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Train the builtin model on the reference dataset and download the adapter (starts local mode if needed)."""
    console = Console()
    with connected(url, key) as client:
        proc = None if client.answers() else start_local(to / "local-mode.log", console)
        try:
            if proc is not None:
                wait_ready(client, proc, to / "local-mode.log")
            code = run_demo(client, dataset, to, console)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except RuntimeError as exc:
            console.print(f"[red]error[/] {exc}", highlight=False)
            code = 1
        finally:
            if proc is not None:
                console.print("stopping the local mode this demo started")
                stop_group(proc)
    raise typer.Exit(code)

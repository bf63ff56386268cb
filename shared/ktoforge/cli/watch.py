"""The live bar of a job: step/total, ETA, loss, kl and rewards/margins, fed by the job's SSE stream.

Watching never changes the job: Ctrl-C detaches (exit 130) and the job trains on. The exit code says how
the job ended (0 succeeded, 1 failed, 2 cancelled), so scripts can chain on ``ktoforge job watch``.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from ktoforge.cli.client import EXIT_CODES, EXIT_INTERRUPTED, ApiError, Client, SseEvent

SHOWN = (("loss", "loss"), ("kl", "kl"), ("rewards/margins", "margins"))


def format_eta(seconds: float | None) -> str:
    """The worker's own estimate (it knows the step time); rich's would restart at every reconnect."""
    if seconds is None:
        return "ETA -:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


def format_stats(metrics: dict[str, Any]) -> str:
    """``loss 0.693 kl 0.000 margins 0.012`` from TRL's metric names, skipping what a log lacks."""
    parts = [f"{label} {metrics[name]:.4g}" for name, label in SHOWN if isinstance(metrics.get(name), (int, float))]
    return " ".join(parts)


def _new_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[stats]}"), console=console,
                    transient=False, refresh_per_second=8)


class Bar:
    """The rich Progress of one job, updated from its events."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.console = console
        self.progress = _new_progress(console)
        self.task: TaskID = self.progress.add_task(job_id[:8], total=None, eta=format_eta(None), stats="queued")
        self.status = "queued"
        self.shown: dict[str, Any] = {}  # the latest value of each shown metric: a log may lack some

    def on_event(self, event: SseEvent) -> None:
        data = event.data
        if event.type == "metrics":
            total, step = data.get("max_steps"), data.get("step")
            # a step whose batches held one label has no margins (as in TRL): keep the last value shown
            self.shown.update({name: data[name] for name, _ in SHOWN if name in data})
            stats = format_stats(self.shown) or self.progress.tasks[0].fields["stats"]
            self.progress.update(self.task, total=total or None, completed=step or 0, stats=stats,
                                 eta=format_eta(data.get("eta_s")))
        elif event.type == "state":
            self.on_state(data)
        elif event.type == "warning":
            self.progress.console.print(f"[yellow]warning[/]: {data.get('message', '')}", highlight=False)
        elif event.type == "log":
            self.on_log(data)

    def on_state(self, data: dict[str, Any]) -> None:
        self.status = str(data.get("status"))
        task = self.progress.tasks[0]
        if self.status == "succeeded":
            total = task.total or task.completed or 1
            self.progress.update(self.task, total=total, completed=total, eta=format_eta(0))
        elif self.status in ("failed", "cancelled"):
            self.progress.update(self.task, stats=f"{self.status}: {data.get('reason') or ''}".strip(": "))
        elif self.status == "running" and task.fields["stats"] == "queued":
            self.progress.update(self.task, stats="running")

    def on_log(self, data: dict[str, Any]) -> None:
        """Routine logs stay quiet, except a resume (the bar jumps back or ahead: say why)."""
        message = data.get("message", "")
        if message in ("resuming from checkpoint", "checkpoint fetched from the API"):
            self.progress.console.print(f"[dim]{message} (step {data.get('step', data.get('resumed_from_step'))})[/]")

    def note(self, message: str) -> None:
        self.progress.console.print(f"[dim]{message}[/]")


def watch(client: Client, job_id: str, console: Console, as_json: bool = False) -> int:
    """Follow a job to its end; the exit code of its final state (130 on Ctrl-C, the job untouched)."""
    if as_json:
        return _watch_json(client, job_id)
    bar = Bar(console, job_id)
    try:
        with bar.progress:
            for event in client.events(job_id, on_retry=bar.note):
                bar.on_event(event)
    except KeyboardInterrupt:
        console.print(f"detached; the job goes on. Follow it again with: ktoforge job watch {job_id}")
        return EXIT_INTERRUPTED
    return _outcome(client, job_id, bar.status, console)


def _outcome(client: Client, job_id: str, status: str, console: Console) -> int:
    """The final line, with the reason of a failed or cancelled job as the API stored it."""
    try:
        job = client.json("GET", f"/v1/jobs/{job_id}")
    except ApiError:
        job = {"status": status, "reason": None}
    status = job["status"]
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "white")
    reason = f": {job['reason']}" if job.get("reason") else ""
    console.print(f"job {job_id} [{colour}]{status}[/]{reason}")
    return EXIT_CODES.get(status, 1)


def _watch_json(client: Client, job_id: str) -> int:
    """One JSON object per event on stdout (for scripts), then the same exit code."""
    status = "unknown"
    try:
        for event in client.events(job_id):
            print(json.dumps({"id": event.id, "type": event.type, "data": event.data}), flush=True)
            if event.type == "state":
                status = str(event.data.get("status"))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_CODES.get(status, 1)

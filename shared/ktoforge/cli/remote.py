"""``ktoforge dataset upload`` and ``ktoforge workers``: the API's view of datasets and workers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ktoforge.cli.client import ApiError
from ktoforge.cli.options import JsonOpt, KeyOpt, UrlOpt, connected, describe, emit


def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL dataset")],
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Upload a dataset to the API; prints its id (for `job submit --dataset ID`) and the report's warnings."""
    with connected(url, key) as client:
        try:
            report = client.upload_dataset(file)
        except ApiError as exc:  # 422 carries the per-line report: show its errors, not a JSON dump
            if exc.status == 422 and isinstance(exc.detail, list):
                Console(stderr=True).print(f"[red]{file.name} refused[/]\n  {describe(exc)}", highlight=False)
                raise typer.Exit(1)
            raise

    def render(console: Console) -> None:
        console.print(f"dataset {report['id']}: {report['rows']} rows ({report['desirable']} desirable, "
                      f"{report['undesirable']} undesirable)", highlight=False)
        for warning in report.get("warnings", []):
            console.print(f"[yellow]warning[/] {warning['kind']} ({warning['count']}): {warning['message']}",
                          highlight=False)

    emit(as_json, report, render)


def _device_text(device: dict[str, Any] | None) -> str:
    """``NVIDIA RTX 3070, 7.6/8.0 GB free, driver 580.1`` or ``CPU x86_64, 24.0 GB RAM``."""
    if not device:
        return "unknown (the worker does not advertise its device)"
    parts = [str(device.get("name") or device.get("kind", "?"))]
    total, free = device.get("memory_total_gb"), device.get("memory_free_gb")
    if total is not None:
        parts.append(f"{free:.1f}/{total:.1f} GB free" if free is not None else f"{total:.1f} GB")
    if device.get("driver"):
        parts.append(f"driver {device['driver']}")
    return ", ".join(parts)


def workers(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """The live workers of each queue and the device each trains on (from their heartbeats)."""
    with connected(url, key) as client:
        listing = client.json("GET", "/v1/workers")

    def render(console: Console) -> None:
        table = Table(title_justify="left")
        for column in ("queue", "worker", "kind", "device", "seen"):
            table.add_column(column, overflow="fold")
        for queue, entries in listing["queues"].items():
            if not entries:
                table.add_row(queue, "[dim]none[/]", "", "", "")
            for entry in entries:
                device = entry.get("device") or {}
                table.add_row(queue, entry["name"], device.get("kind", "?"), _device_text(device),
                              f"{entry.get('age_s', 0):.0f} s ago")
        console.print(table)

    emit(as_json, listing, render)

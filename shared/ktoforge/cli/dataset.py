"""``ktoforge dataset inspect``: the same report the API returns on upload, in a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ktoforge.dataset.report import build_report
from ktoforge.models import ModelError, tokenizer_dir
from ktoforge.settings import get_settings

dataset_app = typer.Typer(no_args_is_help=True)


@dataset_app.command()
def inspect(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL dataset")],
    model: Annotated[str, typer.Option(help="Model whose tokenizer measures lengths")] = "builtin:tiny-mistral",
    max_length: Annotated[int, typer.Option(help="Token budget per row")] = 1024,
    on_error: Annotated[str, typer.Option(help="reject or skip")] = "reject",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Validate a dataset; exit code 1 when it has errors."""
    try:
        model_dir = tokenizer_dir(model, get_settings().model_cache_dir)
    except ModelError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model")
    report = build_report(file, model_dir=model_dir, max_length=max_length, on_error=on_error)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        console = Console()
        summary = Table(title=f"{file.name}: {report.rows} rows")
        for col in ("desirable", "undesirable", "errors", "desirable_weight", "undesirable_weight"):
            summary.add_column(col)
        w = report.recommended_weights
        summary.add_row(str(report.desirable), str(report.undesirable), str(report.error_count),
                        str(w.get("desirable_weight")), str(w.get("undesirable_weight")))
        console.print(summary)
        if report.errors:
            errors = Table(title="errors (first 100)")
            for col in ("line", "kind", "message"):
                errors.add_column(col)
            for e in report.errors:
                errors.add_row(str(e.line), e.kind, e.message)
            console.print(errors)
        stats, tokens = report.stats, report.stats.get("tokens")
        console.print(f"format: {stats.get('format')}; " + (
            f"tokens p50 {tokens['p50']}, p95 {tokens['p95']}, max {tokens['max']}; "
            f"{stats['rows_truncated']} rows over max_length={stats['max_length']}" if tokens else stats.get("note", "")))
        for w_ in report.warnings:
            lines = f" (e.g. lines {', '.join(map(str, w_.lines[:10]))})" if w_.lines else ""
            console.print(f"[yellow]warning[/] {w_.kind}: {w_.message}{lines}")
    raise typer.Exit(1 if report.error_count and on_error == "reject" else 0)

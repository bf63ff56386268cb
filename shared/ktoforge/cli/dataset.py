"""``ktoforge dataset inspect``: the same report the API returns on upload, in a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ktoforge.dataset.report import ON_ERROR, build_report
from ktoforge.models import ModelError, tokenizer_dir
from ktoforge.schemas import DatasetReport
from ktoforge.settings import get_settings

dataset_app = typer.Typer(no_args_is_help=True, help="Validate KTO datasets before training on them.")


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, overflow="fold", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _show(console: Console, name: str, report: DatasetReport) -> None:
    """The report as rich tables: summary, statistics, warnings, errors."""
    w, stats = report.recommended_weights, report.stats
    console.print(_table(f"{name}: {report.rows} rows ({report.format})",
                         ("desirable", "undesirable", "errors", "desirable_weight", "undesirable_weight"),
                         [(report.desirable, report.undesirable, report.error_count, w.get("desirable_weight"),
                           w.get("undesirable_weight"))]))
    tokens = stats.get("tokens")
    figures = [(f"tokens {k}", v) for k, v in (tokens or {}).items()]
    figures += [(k, f"{v['desirable']} / {v['undesirable']} (desirable / undesirable)")
                for k, v in stats.items() if k.startswith("mean_")]
    figures += [("max_length", stats.get("max_length"))]
    figures += [("rows over max_length", stats["rows_truncated"])] if tokens else []
    figures += [("note", stats["note"])] if "note" in stats else []
    console.print(_table("statistics", ("figure", "value"), figures))
    if report.warnings:
        console.print(_table("warnings", ("kind", "count", "example lines", "message"), [
            (x.kind, x.count, ", ".join(map(str, x.lines[:6])), x.message) for x in report.warnings]))
    if report.errors:
        by_kind = ", ".join(f"{kind} {n}" for kind, n in report.error_counts.items())
        console.print(_table(f"errors: {report.error_count} ({by_kind}; first {len(report.errors)} listed)",
                             ("line", "kind", "message"), [(e.line, e.kind, e.message) for e in report.errors]))
    if report.skipped_lines:
        console.print(f"[yellow]{len(report.skipped_lines)} lines skipped[/] (on_error=skip)")


@dataset_app.command()
def inspect(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL dataset")],
    model: Annotated[str, typer.Option(help="Model whose tokenizer and chat template measure lengths: "
                                            "builtin:tiny-mistral or a local model folder")] = "builtin:tiny-mistral",
    max_length: Annotated[int, typer.Option(min=1, help="Token budget per row")] = 1024,
    on_error: Annotated[str, typer.Option(help="reject: errors fail the file; skip: report them as skipped")] = "reject",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Validate a dataset; exit code 1 when it has errors (0 with --on-error skip)."""
    if on_error not in ON_ERROR:
        raise typer.BadParameter(f"must be one of {', '.join(ON_ERROR)}", param_hint="--on-error")
    err = Console(stderr=True)
    try:
        model_dir = tokenizer_dir(model, get_settings().model_cache_dir)
    except ModelError as exc:
        model_dir = None
        err.print(f"[yellow]note[/]: {exc}: no token statistics")
    else:
        if model_dir is None:
            err.print(f"[yellow]note[/]: {model} is a hub id, not downloaded here: no token statistics")
    report = build_report(file, model_dir=model_dir, max_length=max_length, on_error=on_error)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _show(Console(), file.name, report)
    raise typer.Exit(1 if report.error_count and on_error == "reject" else 0)

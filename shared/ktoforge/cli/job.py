"""``ktoforge job submit | list | show | watch | cancel | download``: jobs over the API, from a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ktoforge.cli.client import Client
from ktoforge.cli.options import JsonOpt, KeyOpt, UrlOpt, connected, emit
from ktoforge.cli.watch import watch as follow
from ktoforge.ids import DATASET_ID
from ktoforge.schemas import Hyperparameters, JobCreate, LoraSettings

job_app = typer.Typer(no_args_is_help=True, help="Submit, follow, cancel and download training jobs.")


def parse_value(key: str, raw: str) -> Any:
    """JSON where it parses (numbers, true, lists), else the text; target_modules also takes ``a,b,c``."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.split(",") if key == "target_modules" else raw


def apply_sets(body: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``--set beta=0.2 --set lora.r=8``: each KEY lands in the section of the job body that owns it.

    A bare name is looked up in the hyperparameters, then the LoRA settings, then the top level, so users
    write TRL's and PEFT's names without knowing the body's layout; ``section.name`` is explicit.
    """
    sections = {"hyperparameters": Hyperparameters.model_fields, "lora": LoraSettings.model_fields}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        section, _, name = key.rpartition(".")
        if not section:
            section = next((s for s, fields in sections.items() if name in fields), "")
        if section in sections and name in sections[section]:
            body.setdefault(section, {})[name] = parse_value(name, raw)
        elif not section and name in JobCreate.model_fields and name not in sections:
            body[name] = parse_value(name, raw)
        else:
            known = ", ".join([*sections["hyperparameters"], *sections["lora"]])
            raise typer.BadParameter(f"unknown setting {key!r}; known: {known}", param_hint="--set")
    return body


def resolve_dataset(client: Client, dataset: str, err: Console) -> str:
    """An existing file is uploaded (its report's warnings shown); a 64-hex id is used as it is."""
    path = Path(dataset)
    if path.is_file():
        report = client.upload_dataset(path)
        err.print(f"uploaded {path.name}: {report['rows']} rows ({report['desirable']} desirable, "
                  f"{report['undesirable']} undesirable), dataset {report['id']}", highlight=False)
        for warning in report.get("warnings", []):
            err.print(f"[yellow]warning[/] {warning['kind']} ({warning['count']}): {warning['message']}",
                      highlight=False)
        return str(report["id"])
    if DATASET_ID.fullmatch(dataset):
        return dataset
    raise typer.BadParameter(f"{dataset!r} is neither a file nor a dataset id (64 hex characters)",
                             param_hint="--dataset")


@job_app.command()
def submit(
    dataset: Annotated[str, typer.Option(help="A JSONL file (uploaded first) or the id of an uploaded dataset.")],
    backend: Annotated[str | None, typer.Option(help="cuda, mlx or auto (a queue whose worker can hold it).")] = None,
    model: Annotated[str | None, typer.Option(help="builtin:tiny-mistral, a hub id or a local folder.")] = None,
    preset: Annotated[str | None, typer.Option(help="rtx3070-8gb or m4-24gb (GET /v1/presets); --set overrides.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE, e.g. max_steps=100, lora.r=8.")] = None,
    force: Annotated[bool, typer.Option(help="Queue it even where the memory estimate says it will not fit.")] = False,
    watch: Annotated[bool, typer.Option(help="Follow it with the live bar; exit with its outcome.")] = False,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Queue a KTO job (uploading a dataset file first); with --watch, follow it to its end."""
    err = Console(stderr=True)
    with connected(url, key) as client:
        body: dict[str, Any] = {"dataset_id": resolve_dataset(client, dataset, err)}
        body.update({k: v for k, v in (("backend", backend), ("model", model), ("preset", preset)) if v})
        if force:
            body["force"] = True
        job = client.json("POST", "/v1/jobs", json=apply_sets(body, sets or []))
        for warning in job.get("warnings") or []:
            err.print(f"[yellow]warning[/] {warning}", highlight=False)
        if as_json:
            typer.echo(json.dumps(job, indent=2))
        else:
            err.print(f"job {job['id']} {job['status']} on the {job['backend']} queue ({job['model']})",
                      highlight=False)
        if watch:
            raise typer.Exit(follow(client, job["id"], Console(), as_json))


def _job_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(title_justify="left")
    for column in ("id", "status", "backend", "model", "step", "created", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for job in jobs:
        step = f"{job.get('step') or 0}/{job.get('max_steps') or '?'}"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created_at"]))
        table.add_row(job["id"], job["status"], job["backend"], job["model"], step, created, job.get("reason") or "")
    return table


@job_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only this status (queued, running, succeeded, ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """The newest jobs."""
    with connected(url, key) as client:
        params = {"limit": limit, **({"status": status} if status else {})}
        page = client.json("GET", "/v1/jobs", params=params)
    emit(as_json, page, lambda c: c.print(_job_table(page["items"]), f"{page['total']} jobs in all"))


@job_app.command()
def show(job_id: str, as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """One job: its state, settings and artifacts."""
    with connected(url, key) as client:
        job = client.json("GET", f"/v1/jobs/{job_id}")
        job["artifacts"] = client.json("GET", f"/v1/jobs/{job_id}/artifacts")

    def render(console: Console) -> None:
        console.print(_job_table([job]))
        settings = {**job["hyperparameters"], **{f"lora.{k}": v for k, v in job["lora"].items()}}
        console.print(" ".join(f"{k}={v}" for k, v in settings.items()), highlight=False)
        for artifact in job["artifacts"]:
            console.print(f"  {artifact['name']}  {artifact['size']} bytes", highlight=False)

    emit(as_json, job, render)


@job_app.command("watch")
def watch_job(job_id: str, as_json: Annotated[bool, typer.Option("--json", help="Events as JSON lines.")] = False,
              url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Follow a job with the live bar; exit 0 succeeded, 1 failed, 2 cancelled, 130 on Ctrl-C (it goes on)."""
    with connected(url, key) as client:
        raise typer.Exit(follow(client, job_id, Console(), as_json))


@job_app.command()
def cancel(job_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Cancel a job: a queued one at once, a running one at the end of its current step."""
    with connected(url, key) as client:
        job = client.json("POST", f"/v1/jobs/{job_id}/cancel")
    Console().print(f"job {job_id}: cancel requested ({job['status']})", highlight=False)


@job_app.command()
def download(job_id: str, to: Annotated[Path | None, typer.Option(help="Folder (default: ./ktoforge-<id>).")] = None,
             url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Every artifact of a finished job (the LoRA adapter, tokenizer, metrics.jsonl, job_config.json)."""
    folder = to or Path(f"ktoforge-{job_id[:12]}")
    with connected(url, key) as client:
        files = client.download(job_id, folder)
    if not files:
        Console(stderr=True).print(f"job {job_id} has no artifacts (yet)")
        raise typer.Exit(1)
    Console().print(f"{len(files)} files in {folder.resolve()}", highlight=False)


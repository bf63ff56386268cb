"""``ktoforge eval``: a tool-call evaluation of a job (base vs adapter, run by a worker of its backend) or of
any OpenAI-compatible endpoint, with the same prompts and scoring; prints the report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown

from ktoforge.cli.client import ApiError, Client
from ktoforge.cli.options import EXIT_ERROR, JsonOpt, KeyOpt, UrlOpt, connected
from ktoforge.evaluation.endpoint import EndpointError, evaluate_endpoint
from ktoforge.evaluation.prompts import PromptFileError, load_prompt_file
from ktoforge.evaluation.report import to_markdown

DONE = ("succeeded", "failed")


def run_job_evaluation(client: Client, job_id: str, body: dict[str, Any], timeout_s: float,
                       err: Console) -> dict[str, Any]:
    """Queue the evaluation, wait for a worker to finish it, return eval_report.json."""
    ev = client.json("POST", f"/v1/jobs/{job_id}/evaluations", json=body)
    err.print(f"evaluation {ev['id']} queued on the job's queue; waiting for a worker", highlight=False)
    deadline = time.monotonic() + timeout_s
    while ev["status"] not in DONE:
        if time.monotonic() > deadline:
            raise ApiError(0, f"evaluation {ev['id']} still {ev['status']} after {timeout_s:.0f} s; "
                              f"see GET /v1/jobs/{job_id}/evaluations/{ev['id']}")
        time.sleep(2)
        ev = client.json("GET", f"/v1/jobs/{job_id}/evaluations/{ev['id']}")
    if ev["status"] == "failed":
        raise ApiError(0, f"evaluation {ev['id']} failed: {ev.get('reason')}")
    return client.json("GET", f"/v1/jobs/{job_id}/artifacts/eval_report.json")


def show(report: dict[str, Any], as_json: bool, out: Path | None, title: str) -> None:
    """Print the report (markdown, or JSON with --json); with --out also write eval_report.json/.md there."""
    markdown = to_markdown(report, title)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_report.json").write_text(json.dumps(report, indent=2))
        (out / "eval_report.md").write_text(markdown)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        Console().print(Markdown(markdown))


def eval_command(
    job: Annotated[str | None, typer.Option("--job", help="Evaluate this succeeded job: base vs adapter.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Evaluate an OpenAI-compatible server instead "
                                                      "(e.g. http://127.0.0.1:8080/v1).")] = None,
    model: Annotated[str | None, typer.Option(help="With --endpoint: the model name the server serves.")] = None,
    prompts: Annotated[Path | None, typer.Option(help="JSON list of {id, question, expected_tools, system?, "
                                                      "tags?} (default for --job: its held-out rows).")] = None,
    limit: Annotated[int, typer.Option(help="Most held-out rows used (--job without --prompts).")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt and model.")] = 192,
    out: Annotated[Path | None, typer.Option(help="Also write eval_report.json and eval_report.md here.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the evaluation.")] = 3600,
    as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None,
    endpoint_key: Annotated[str | None, typer.Option(help="Bearer key the endpoint wants, if any.")] = None,
) -> None:
    """Score tool calls: parse rate, valid JSON arguments, right tool, no call where none is expected."""
    err = Console(stderr=True)
    if (job is None) == (endpoint is None):
        raise typer.BadParameter("give exactly one of --job ID or --endpoint URL", param_hint="--job/--endpoint")
    try:
        given = load_prompt_file(prompts) if prompts else None
    except PromptFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prompts")
    if endpoint is not None:
        if not model or given is None:
            raise typer.BadParameter("--endpoint needs --model NAME and --prompts FILE", param_hint="--endpoint")
        try:
            report = evaluate_endpoint(endpoint, model, given, max_new_tokens, endpoint_key)
        except EndpointError as exc:
            err.print(f"[red]error[/] {exc}", highlight=False)
            raise typer.Exit(EXIT_ERROR)
        return show(report, as_json, out, f"Tool-call evaluation of {model} at {endpoint}")
    body: dict[str, Any] = {"limit": limit, "max_new_tokens": max_new_tokens}
    if given is not None:
        body["prompts"] = [p.model_dump(exclude_none=True) for p in given]
    with connected(url, key) as client:
        report = run_job_evaluation(client, job, body, timeout, err)
    show(report, as_json, out, f"Tool-call evaluation of job {job}")

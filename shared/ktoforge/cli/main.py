"""The ``ktoforge`` command: local mode, `.env` creation and dataset inspection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import Context
from typer._click.exceptions import UsageError  # typer 0.29 carries its own click: click.UsageError is another class
from typer.core import TyperGroup

from ktoforge.cli.client import EXIT_USAGE


class _Group(TyperGroup):
    """Usage errors (a bad option, an unknown ``--set`` key) exit with EXIT_USAGE instead of click's 2: 2 means
    "the job was cancelled" to a script that runs ``ktoforge job watch`` and must not be said by a typo."""

    def make_context(self, *args: Any, **kwargs: Any) -> Context:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


app = typer.Typer(cls=_Group, help="KTO Forge: KTO preference fine-tuning on CUDA and Apple silicon.",
                  no_args_is_help=True)


@app.command()
def up() -> None:
    """Start redis-server, the API, the workers and Flower as local processes (what `make dev` runs)."""
    from ktoforge.local import up as run

    raise typer.Exit(run())


@app.command()
def init(
    path: Annotated[Path, typer.Option(help="The file to write.")] = Path(".env"),
    force: Annotated[bool, typer.Option(help="Replace an existing file (its secrets are lost).")] = False,
    gpu: Annotated[bool | None, typer.Option("--gpu/--no-gpu", show_default="detected with nvidia-smi -L",
                                             help="Set COMPOSE_PROFILES=cuda (compose runs worker-cuda).")] = None,
    example: Annotated[Path | None, typer.Option(help="Template (default: .env.example beside --path).")] = None,
) -> None:
    """Write .env from .env.example with a fresh random secret for every change-me value (mode 0600)."""
    from ktoforge.envfile import init as write

    raise typer.Exit(write(path, force, gpu, example))


def _register_subcommands() -> None:
    from ktoforge.cli.dataset import dataset_app

    app.add_typer(dataset_app, name="dataset", help="Inspect, validate and upload datasets.")
    from ktoforge.cli.demo import demo
    from ktoforge.cli.job import job_app
    from ktoforge.cli.remote import upload, workers

    dataset_app.command("upload")(upload)
    app.add_typer(job_app, name="job", help="Submit, follow, cancel and download training jobs (over the API).")
    app.command("workers")(workers)
    app.command("demo")(demo)
    from ktoforge.cli.eval import eval_command
    from ktoforge.cli.export import export

    app.command("eval")(eval_command)
    job_app.command("export")(export)


_register_subcommands()

"""The ``ktoforge`` command: local mode and dataset inspection."""

from __future__ import annotations

import typer

app = typer.Typer(help="KTO Forge: KTO preference fine-tuning on CUDA and Apple silicon.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Start redis-server, the API, the workers and Flower as local processes (what `make dev` runs)."""
    from ktoforge.local import up as run

    raise typer.Exit(run())


def _register_subcommands() -> None:
    from ktoforge.cli.dataset import dataset_app

    app.add_typer(dataset_app, name="dataset", help="Inspect and validate datasets.")


_register_subcommands()

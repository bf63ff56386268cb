"""What every remote verb shares: the --url/--key/--json options, the client they make, and error exits.

Defaults come from the one Settings module (``KTOFORGE_API_URL`` / ``KTOFORGE_API_KEY``, or .env), so a
user of `make dev` types no flag at all, and a remote server needs two variables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from ktoforge.cli.client import ApiError, Client

UrlOpt = Annotated[str | None, typer.Option("--url", help="API URL (default: KTOFORGE_API_URL, or the local API).")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key (default: KTOFORGE_API_KEY).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
EXIT_ERROR = 1


def make_client(url: str | None, key: str | None) -> Client:
    """Flags first, then Settings (env and .env); reading Settings only when a flag is missing."""
    if url is None or key is None:
        from ktoforge.settings import get_settings

        settings = get_settings()
        url = url or settings.api_url
        key = key or settings.api_key.get_secret_value()
    return Client(url, key)


@contextmanager
def connected(url: str | None, key: str | None) -> Iterator[Client]:
    """A client for one command; an API refusal becomes a red message and exit 1 (never a traceback)."""
    client = make_client(url, key)
    try:
        yield client
    except ApiError as exc:
        Console(stderr=True).print(f"[red]error[/] {describe(exc)}", highlight=False)
        raise typer.Exit(EXIT_ERROR)
    finally:
        client.close()


def describe(exc: ApiError) -> str:
    """FastAPI's ``[{loc, msg}]`` detail as ``body.model: msg`` lines; anything else as it came."""
    prefix = f"{exc.status}: " if exc.status else ""
    if isinstance(exc.detail, list):
        lines = []
        for item in exc.detail:
            if isinstance(item, dict) and "msg" in item:
                where = ".".join(str(p) for p in item.get("loc", []))
                lines.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
            else:
                lines.append(json.dumps(item))
        return prefix + "\n  ".join(lines)
    if isinstance(exc.detail, dict):
        return prefix + json.dumps(exc.detail, indent=2)
    return prefix + str(exc.detail)


def emit(as_json: bool, payload: Any, show: Callable[[Console], None]) -> None:
    """--json prints the API's own JSON (scripts parse it); otherwise ``show`` renders it for people."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        show(Console())

"""``ktoforge job export ID --to DIR [--format merged|ollama|mlx]``: a finished job's adapter, ready to run.

- ``merged``: DIR/merged, the base with the adapter merged in (safetensors; transformers loads it);
- ``ollama``: DIR/Modelfile with DIR/base (the base model's folder) and DIR/adapter (the PEFT adapter), so
  ``cd DIR && ollama create NAME -f Modelfile`` works as it is;
- ``mlx``: DIR/fused, mlx-lm's own fuse of the job's mlx-lm adapter (MLX jobs; needs mlx-lm here).

The base model is resolved on this machine the way a worker resolves it (a builtin is generated in the
model cache dir, a hub id downloaded), so the exported folder does not depend on the worker's disk.
"""

from __future__ import annotations

import enum
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ktoforge.cli.options import EXIT_ERROR, KeyOpt, UrlOpt, connected
from ktoforge.export import MODELFILE, PEFT_CONFIG, PEFT_WEIGHTS, ExportError, copy_tokenizer, job_modelfile, merge


class Format(str, enum.Enum):
    merged = "merged"
    ollama = "ollama"
    mlx = "mlx"


def base_model_dir(model: str) -> Path:
    """A local folder of the job's base model: builtin generated, local as it is, hub downloaded."""
    from ktoforge.models import check_model, resolve
    from ktoforge.settings import get_settings

    settings = get_settings()
    ref = resolve(model, settings.model_cache_dir, settings)
    if check_model(model, settings) != "hub":
        return Path(ref)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ref, token=settings.hf_token.get_secret_value() or None,
                                  allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja"]))


def write_ollama(base: Path, job_dir: Path, to: Path, model: str) -> Path:
    """DIR/base, DIR/adapter and DIR/Modelfile (the job's own, else made from the job's tokenizer)."""
    (to / "adapter").mkdir(parents=True, exist_ok=True)
    for name in (PEFT_WEIGHTS, PEFT_CONFIG):
        shutil.copy2(job_dir / name, to / "adapter" / name)
    (to / "base").mkdir(exist_ok=True)
    for path in [base / "config.json", *base.glob("*.safetensors")]:
        shutil.copy2(path, to / "base" / path.name)
    copy_tokenizer(base, to / "base")
    shipped = job_dir / MODELFILE
    (to / MODELFILE).write_text(shipped.read_text() if shipped.is_file() else job_modelfile(model, job_dir))
    return to / MODELFILE


def write_mlx(base: Path, job_dir: Path, to: Path) -> Path:
    """mlx-lm's fuse of the job's mlx-lm adapter into DIR/fused."""
    if not (job_dir / "mlx_adapter.tar").is_file():
        raise ExportError("this job has no mlx_adapter.tar: --format mlx is for jobs trained on the MLX backend")
    with tarfile.open(job_dir / "mlx_adapter.tar") as tar:
        tar.extractall(to / "mlx_adapter", filter="data")
    done = subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(base), "--adapter-path",
                           str(to / "mlx_adapter"), "--save-path", str(to / "fused")], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"mlx_lm fuse failed (is mlx-lm installed here?): {done.stderr.strip()[-800:]}")
    return to / "fused"


def export(
    job_id: str,
    to: Annotated[Path, typer.Option("--to", help="Folder to write into.")],
    format_: Annotated[Format, typer.Option("--format", help="merged | ollama | mlx")] = Format.merged,
    url: UrlOpt = None, key: KeyOpt = None,
) -> None:
    """Export a succeeded job: merged safetensors, an Ollama Modelfile + folders, or mlx-lm's fused model."""
    err = Console(stderr=True)
    with connected(url, key) as client:
        job = client.json("GET", f"/v1/jobs/{job_id}")
        if job["status"] != "succeeded":
            err.print(f"[red]error[/] job {job_id} is {job['status']}; only a succeeded job has an adapter")
            raise typer.Exit(EXIT_ERROR)
        client.download(job_id, to / "job")
    try:
        base = base_model_dir(job["model"])
        if format_ is Format.merged:
            written = merge(base, to / "job", to / "merged")
        elif format_ is Format.ollama:
            written = write_ollama(base, to / "job", to, job["model"])
        else:
            written = write_mlx(base, to / "job", to)
    except (ExportError, ValueError, OSError) as exc:
        err.print(f"[red]error[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(str(written))

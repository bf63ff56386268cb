"""Files every finished job gets besides what its backend wrote: ``curves.png`` and the Ollama ``Modelfile``.

Called by the lifecycle just before the artifacts are uploaded, for both backends alike. Neither file is
worth a failed job: a drawing or writing error is logged as a job event and the job's real result (the
adapter) is still uploaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ktoforge.curves import FILENAME as CURVES, write_curves
from ktoforge.export import MODELFILE, job_modelfile

log = logging.getLogger(__name__)


def write_extras(output_dir: Path, model: str, note: Callable[..., None], title: str = "") -> list[str]:
    """Write curves.png (when metrics.jsonl has points) and Modelfile into ``output_dir``; the names written."""
    written = []
    try:
        if write_curves(output_dir / "metrics.jsonl", output_dir / CURVES, title):
            written.append(CURVES)
    except Exception as exc:
        log.exception("curves not drawn")
        note("curves not drawn", error=f"{type(exc).__name__}: {exc}")
    if (output_dir / "adapter_model.safetensors").is_file():
        try:
            (output_dir / MODELFILE).write_text(job_modelfile(model, output_dir))
            written.append(MODELFILE)
        except Exception as exc:
            log.exception("Modelfile not written")
            note("Modelfile not written", error=f"{type(exc).__name__}: {exc}")
    return written

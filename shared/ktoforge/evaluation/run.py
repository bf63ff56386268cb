"""One evaluation run on a worker: claim, fetch the job's adapter, generate base vs adapter, score, upload.

Backends differ only in their ``generate`` function (torch: one PEFT model with its adapter disabled for the
base; MLX: mlx-lm with and without the adapter). Everything else, the prompt set, the scoring, the report
and its upload as job artifacts, lives here once, like the training lifecycle.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tarfile
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


from ktoforge.evaluation.prompts import EvalPrompt, held_out_prompts
from ktoforge.evaluation.records import REPORT_FILES, EvaluationStatus, EvaluationStore
from ktoforge.evaluation.report import build_report, to_markdown
from ktoforge.ids import is_job_id
from ktoforge.jobs import JobStore
from ktoforge.lifecycle import Renewal, failure_reason
from ktoforge.models import resolve
from ktoforge.settings import get_settings
from ktoforge.worker_client import WorkerClient

log = logging.getLogger(__name__)

# What a worker needs of the job: the PEFT adapter, the tokenizer (chat template) and, for MLX, its adapter.
JOB_FILES = ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "mlx_adapter.tar")
Outputs = dict[str, list[dict[str, Any]]]
# (model, job files, prompts, max_new_tokens, guard): guard() is called before each batch of generation and
# raises ClaimLost once the evaluation's claim is gone, so a worker whose claim lapsed stops generating.
GenerateFn = Callable[[str, Path, Sequence[EvalPrompt], int, Callable[[], None]], Outputs]


class ClaimLost(RuntimeError):
    """The evaluation's claim lapsed while it ran: the reaper may have failed it, another worker may hold it."""


def fetch_job_files(client: WorkerClient, job_id: str, folder: Path) -> Path:
    """The job's adapter and tokenizer files into ``folder`` (absent optional files are skipped);
    ``folder/mlx_adapter`` holds the unpacked mlx-lm adapter when the job has one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in JOB_FILES:
        response = client.http.get(f"/v1/internal/jobs/{job_id}/artifacts/{name}")
        if response.status_code == 404:
            continue
        response.raise_for_status()
        (folder / name).write_bytes(response.content)
    if not (folder / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"job {job_id} has no adapter_model.safetensors artifact to evaluate")
    if (folder / "mlx_adapter.tar").is_file():
        with tarfile.open(folder / "mlx_adapter.tar") as tar:
            tar.extractall(folder / "mlx_adapter", filter="data")
    return folder


def upload_reports(client: WorkerClient, evaluation_id: str, folder: Path) -> list[str]:
    for name in REPORT_FILES:
        with (folder / name).open("rb") as fh:
            client.http.put(f"/v1/internal/evaluations/{evaluation_id}/artifacts/{name}",
                            content=fh).raise_for_status()
    return list(REPORT_FILES)


def evaluation_prompts(evals: EvaluationStore, evaluation_id: str, client: WorkerClient, job: Any,
                       work_dir: Path, limit: int) -> list[EvalPrompt]:
    """The request's own prompts, else the job's held-out desirable rows (by its seed and eval_fraction)."""
    given = evals.prompts(evaluation_id)
    if given:
        return given
    dataset = client.download_dataset(job.dataset_id, work_dir / "datasets")
    hp = job.hyperparameters
    prompts = held_out_prompts(dataset, hp.eval_fraction, hp.seed, limit)
    if not prompts:
        raise ValueError(f"job {job.id} holds out no desirable row (eval_fraction={hp.eval_fraction}); "
                         "give a prompt file")
    return prompts


def run_evaluation(job_id: str, evaluation_id: str, backend: str, generate: GenerateFn,
                   worker: str | None = None) -> None:
    """Run one delivery of an evaluation message; returns normally in every case so the message is acked.

    While it runs, the claim is renewed; once a renewal finds it gone (this worker was thought lost), the run
    stops at the next batch and writes nothing: the record keeps what the reaper wrote."""
    settings = get_settings()
    evals = EvaluationStore.from_url(settings.redis_url)
    ev = evals.get(evaluation_id) if is_job_id(job_id) else None
    if ev is None or ev.job_id != job_id or ev.status != EvaluationStatus.queued:
        log.info("evaluation %s: nothing to run (%s)", evaluation_id, ev.status.value if ev else "unknown")
        return
    token = f"{socket.gethostname()}:{uuid.uuid4().hex}"
    if not evals.claim(evaluation_id, token, settings.lease_ttl_s):
        return
    evals.update(evaluation_id, status=EvaluationStatus.running, worker=worker or token.split(":")[0])
    folder = Path(settings.work_dir) / "evaluations" / evaluation_id
    lost = threading.Event()
    renewal = Renewal(f"claim of evaluation {evaluation_id}",
                      lambda: evals.renew_claim(evaluation_id, token, settings.lease_ttl_s),
                      settings.heartbeat_interval_s, lost)

    def guard() -> None:
        if lost.is_set():
            raise ClaimLost(f"the claim of evaluation {evaluation_id} lapsed")

    renewal.start()
    try:
        fields: dict[str, Any] = _evaluate(evals, ev, backend, generate, token, folder, guard)
    except Exception as exc:  # recorded with a reason; the worker lives on
        log.exception("evaluation %s of job %s failed", evaluation_id, job_id)
        fields = {"status": EvaluationStatus.failed, "reason": failure_reason(exc, settings)}
    finally:
        renewal.stopped.set()
        shutil.rmtree(folder, ignore_errors=True)
    if evals.update_if_claimed(evaluation_id, token, **fields) is None:
        log.warning("evaluation %s: its claim lapsed, the record stays as it is (this run: %s)", evaluation_id,
                    fields["status"].value)


def _evaluate(evals: EvaluationStore, ev: Any, backend: str, generate: GenerateFn, token: str, folder: Path,
              guard: Callable[[], None]) -> dict[str, Any]:
    """Prompts, the job's files, generation, the report and its upload; the record's final fields."""
    settings = get_settings()
    job = JobStore.from_url(settings.redis_url).get(ev.job_id)
    client = WorkerClient(settings.api_url, settings.worker_token.get_secret_value(), token)
    prompts = evaluation_prompts(evals, ev.id, client, job, Path(settings.work_dir), ev.limit)
    files = fetch_job_files(client, ev.job_id, folder / "job")
    outputs = generate(resolve(job.model, settings.model_cache_dir), files, prompts, ev.max_new_tokens, guard)
    report = build_report(prompts, outputs, {"job_id": ev.job_id, "evaluation_id": ev.id, "model": job.model,
                                             "backend": backend, "prompt_source": ev.prompt_source,
                                             "max_new_tokens": ev.max_new_tokens})
    (folder / "eval_report.json").write_text(json.dumps(report, indent=2))
    (folder / "eval_report.md").write_text(to_markdown(report, f"Tool-call evaluation of job {ev.job_id}"))
    guard()
    names = upload_reports(client, ev.id, folder)
    return {"status": EvaluationStatus.succeeded, "prompts": len(prompts), "artifacts": names}

"""Evaluations of a finished job (base model vs adapter on a prompt set), and the worker routes they need.

Users (API key): queue one, list them, read one; the reports land among the job's artifacts. Workers
(worker token): read a job's adapter files, and upload the reports of the evaluation they claimed (its
claim token in the lease header, as for training uploads), only while it runs.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, status
from fastapi.responses import FileResponse

from ktoforge.evaluation.records import (EVAL_TASK, REPORT_FILES, Evaluation, EvaluationCreate, EvaluationStatus,
                                         EvaluationStore)
from ktoforge.schemas import Artifact, JobStatus
from ktoforge.settings import get_settings
from ktoforge.worker_client import LEASE_HEADER
from ktoforge_api.deps import CeleryDep, SettingsDep, StorageDep, StoredJobDep, require_user, require_worker
from ktoforge_api.errors import unprocessable
from ktoforge_api.storage import TooLarge

user_router = APIRouter(prefix="/v1/jobs", tags=["evaluations"], dependencies=[Depends(require_user)])
worker_router = APIRouter(prefix="/v1/internal", tags=["internal (workers)"], dependencies=[Depends(require_worker)],
                          include_in_schema=False)  # workers' routes: not part of the public API
router = APIRouter()
EvaluationId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The evaluation's id")]


def get_evaluations() -> EvaluationStore:
    return EvaluationStore.from_url(get_settings().redis_url)


EvalStoreDep = Annotated[EvaluationStore, Depends(get_evaluations)]


@user_router.post("/{job_id}/evaluations", status_code=status.HTTP_202_ACCEPTED, response_model=Evaluation,
                  responses={409: {"description": "The job has not succeeded (no adapter to evaluate)"}})
def create_evaluation(job: StoredJobDep, spec: EvaluationCreate, evals: EvalStoreDep, storage: StorageDep,
                      celery: CeleryDep) -> Evaluation:
    """Queue a tool-call evaluation, base model vs adapter, on the job's own queue."""
    if job.status != JobStatus.succeeded:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job.id} is {job.status.value}; only a succeeded job has an adapter to evaluate")
    if not dict(storage.list_artifacts(job.id)).get("adapter_model.safetensors"):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job {job.id} has no adapter_model.safetensors artifact")
    if spec.prompts is None and job.hyperparameters.eval_fraction <= 0:
        raise unprocessable(["body", "prompts"], "the job held out no rows (eval_fraction=0): give prompts, a JSON "
                            "list of {id, question, expected_tools, system?, tags?}")
    ev = evals.create(job.id, spec)
    try:
        celery.send_task(EVAL_TASK, args=[job.id, ev.id], queue=job.backend)
    except Exception as exc:  # broker unreachable: the record must not sit queued with no message behind it
        evals.update(ev.id, status=EvaluationStatus.failed, reason=f"could not reach the queue: {type(exc).__name__}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the job queue is unavailable; retry later")
    return ev


@user_router.get("/{job_id}/evaluations", response_model=list[Evaluation])
def list_evaluations(job: StoredJobDep, evals: EvalStoreDep) -> list[Evaluation]:
    """Newest first."""
    return evals.of_job(job.id)


@user_router.get("/{job_id}/evaluations/{evaluation_id}", response_model=Evaluation)
def get_evaluation(job: StoredJobDep, evaluation_id: EvaluationId, evals: EvalStoreDep) -> Evaluation:
    ev = evals.get(evaluation_id)
    if ev is None or ev.job_id != job.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.id} has no evaluation {evaluation_id}")
    return ev


@worker_router.get("/jobs/{job_id}/artifacts/{name}", response_class=FileResponse)
def worker_artifact(job: StoredJobDep, name: str, storage: StorageDep) -> FileResponse:
    """A job's artifact for the worker evaluating it (the adapter, the tokenizer)."""
    path = storage.artifact_path(job.id, name)
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.id} has no artifact {name!r}")
    return FileResponse(path, filename=name)


@worker_router.put("/evaluations/{evaluation_id}/artifacts/{name}", status_code=status.HTTP_201_CREATED,
                   response_model=Artifact)
async def upload_report(evaluation_id: EvaluationId, name: str, request: Request, evals: EvalStoreDep,
                        storage: StorageDep, settings: SettingsDep,
                        claim: Annotated[str | None, Header(alias=LEASE_HEADER, max_length=200)] = None) -> Artifact:
    """An evaluation's report, from the worker holding its claim while it runs; kept among the job's artifacts."""
    ev = evals.get(evaluation_id)
    if ev is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"evaluation {evaluation_id} not found")
    holder = evals.claim_holder(evaluation_id)
    if ev.status != EvaluationStatus.running or not claim or not holder or not hmac.compare_digest(
            claim.encode(), holder.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this worker is not running evaluation {evaluation_id}")
    if name not in REPORT_FILES:
        raise unprocessable(["path", "name"], f"an evaluation uploads only {', '.join(REPORT_FILES)}")
    target = storage.artifact_path(ev.job_id, name)
    try:
        tmp, _, size = await storage.receive(request.stream(), settings.max_worker_upload_mb * 1024 * 1024)
    except TooLarge:
        raise HTTPException(413, detail=f"upload larger than {settings.max_worker_upload_mb} MiB")
    storage.commit_artifact(tmp, target)
    return Artifact(name=name, size=size)


router.include_router(user_router)
router.include_router(worker_router)

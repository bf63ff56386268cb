"""Training jobs: submit, list, read, cancel. State lives in the job store; the queue gets a task by name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response, status

from ktoforge.jobs import JobNotFound, QueueFull, TransitionError
from ktoforge.models import ModelError, check_model
from ktoforge.queue import enqueue
from ktoforge.schemas import Job, JobCreate, JobPage, JobStatus
from ktoforge_api.deps import (CeleryDep, JobDep, ReaderDep, SettingsDep, StorageDep, StoreDep, job_not_found,
                                require_user)
from ktoforge_api.errors import unprocessable
from ktoforge_api.placement import place, precompute_warnings, record_warnings
from ktoforge_api.quotas import check_quotas, queue_full

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_user)])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Job,
             responses={200: {"model": Job, "description": "Retried request: the job first created with this key"},
                        413: {"description": "Body larger than KTOFORGE_MAX_JSON_BODY_KB"},
                        429: {"description": "KTOFORGE_MAX_QUEUED_JOBS jobs are queued already"}})
def create_job(
    spec: JobCreate,
    response: Response,
    store: StoreDep,
    storage: StorageDep,
    celery: CeleryDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="Retries with the same key "
                                                                              "return the first job")] = None,
) -> Job:
    """Queue a KTO training job on the queue of its backend (within the KTOFORGE_MAX_* quotas)."""
    check_quotas(spec, settings, store.count(JobStatus.queued))
    if not storage.has_dataset(spec.dataset_id):
        raise unprocessable(["body", "dataset_id"], f"dataset {spec.dataset_id} not found; upload it first")
    try:
        check_model(spec.model)
    except ModelError as exc:
        raise unprocessable(["body", "model"], str(exc))
    placement = place(spec, store.workers(), settings)  # will it fit? and backend "auto" (ktoforge_api.placement)
    if spec.hyperparameters.precompute_ref_log_probs:  # reads the dataset's report: only for those who ask
        report = storage.report(spec.dataset_id)
        placement.warnings += precompute_warnings(spec, report.desirable, report.undesirable)
    spec = spec.model_copy(update={"backend": placement.backend})
    try:
        job, created = store.create(spec, idempotency_key, settings.max_queued_jobs)
    except QueueFull as exc:  # filled by submits running beside this one since check_quotas counted
        raise queue_full(exc.queued, settings)
    except TransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    if not created:
        response.status_code = status.HTTP_200_OK
        return job
    job = record_warnings(store, job, placement)
    try:
        enqueue(celery, job.id, job.backend)
    except Exception as exc:  # broker unreachable: the job must not sit "queued" with no message behind it
        store.transition(job.id, JobStatus.failed, reason=f"could not reach the queue: {type(exc).__name__}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the job queue is unavailable; retry later")
    return job


@router.get("", response_model=JobPage)
async def list_jobs(
    reader: ReaderDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first, optionally only one status. The ``JobPage`` JSON, joined from each record's kept answer
    (JobReader.page_json): on the event loop, no thread."""
    return Response(await reader.page_json(status_, offset, limit), media_type="application/json")


@router.get("/{job_id}", response_model=Job, responses={404: {"description": "No such job"}})
async def get_job(job_id: str, reader: ReaderDep) -> Response:
    """The record as JSON: its kept answer (JobReader.get_json), written by pydantic once while the record stays
    the same, not validated and encoded again against ``response_model`` on each request. On the event loop,
    no thread."""
    try:
        return Response(await reader.get_json(job_id), media_type="application/json")
    except JobNotFound:
        raise job_not_found(job_id)


@router.post("/{job_id}/cancel", response_model=Job, responses={409: {"description": "Job already finished"}})
def cancel_job(job: JobDep, store: StoreDep) -> Job:
    """A queued job is cancelled at once; a running one stops at the end of its current step."""
    try:
        return store.request_cancel(job.id)
    except TransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))

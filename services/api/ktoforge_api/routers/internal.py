"""Worker-only routes (worker token): dataset download, artifact upload, and each job's latest checkpoint.

Through these a worker on another machine needs only REDIS_URL and API_URL; the user key is refused, so a
user cannot plant an artifact in someone's job. The checkpoint kept here lets a job whose worker is gone for
good resume on any other worker of its queue, not only on one that sees the lost worker's disk.

Writes (artifacts, checkpoints, their removal) come only from the worker that holds the job's lease, which it
names in the X-KTOForge-Lease header, and uploads only while the job runs: a worker that lost its lease
cannot overwrite the new owner's checkpoint, and a finished job's artifacts stay as they are. A checkpoint is
read as a plain tar and its members counted and summed before it is kept (ktoforge.checkpoint_tar).
"""

from __future__ import annotations

import hmac
import tarfile
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ktoforge import checkpoint_tar
from ktoforge.jobs import JobStore
from ktoforge.schemas import Artifact, CheckpointInfo, Job, JobStatus
from ktoforge.worker_client import LEASE_HEADER
from ktoforge_api.deps import SettingsDep, StorageDep, StoredJobDep, StoreDep, require_worker
from ktoforge_api.errors import unprocessable
from ktoforge_api.storage import Storage, TooLarge

router = APIRouter(prefix="/v1/internal", tags=["internal (workers)"], dependencies=[Depends(require_worker)])
Lease = Annotated[str | None, Header(alias=LEASE_HEADER, max_length=200,
                                     description="The lease token of the worker training the job")]


def check_lease(store: JobStore, job_id: str, lease: str | None) -> None:
    """403 unless ``lease`` is the job's current lease (constant-time compare, like the tokens)."""
    holder = store.lease_holder(job_id)
    if not lease or holder is None or not hmac.compare_digest(lease.encode(), holder.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this worker does not hold the lease of job {job_id}")


def lease_holder_job(job: StoredJobDep, store: StoreDep, lease: Lease = None) -> Job:
    """The job, when the caller holds its lease (removing a checkpoint: the job may have just finished)."""
    check_lease(store, job.id, lease)
    return job


def uploading_job(job: StoredJobDep, store: StoreDep, lease: Lease = None) -> Job:
    """The job, when it runs and the caller holds its lease: the only time a worker's upload is accepted."""
    if job.status != JobStatus.running:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job.id} is {job.status.value}; uploads are accepted only while it runs")
    check_lease(store, job.id, lease)
    return job


LeasedJobDep = Annotated[Job, Depends(lease_holder_job)]
UploadingJobDep = Annotated[Job, Depends(uploading_job)]


async def _receive(request: Request, storage: Storage, max_mb: int) -> tuple[FilePath, int]:
    try:
        tmp, _, size = await storage.receive(request.stream(), max_mb * 1024 * 1024)
    except TooLarge:
        raise HTTPException(413, detail=f"upload larger than {max_mb} MiB (KTOFORGE_MAX_WORKER_UPLOAD_MB)")
    return tmp, size


def _still_leased(store: JobStore, job_id: str, lease: str | None, tmp: FilePath) -> None:
    """Checked again once the body is in: the lease may have moved on during a long upload."""
    try:
        check_lease(store, job_id, lease)
    except HTTPException:
        tmp.unlink(missing_ok=True)
        raise


@router.get("/datasets/{dataset_id}/file", response_class=FileResponse)
def download_dataset(dataset_id: str, storage: StorageDep) -> FileResponse:
    if not storage.has_dataset(dataset_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"dataset {dataset_id} not found")
    return FileResponse(storage.dataset_file(dataset_id), media_type="application/jsonl")


@router.put("/jobs/{job_id}/artifacts/{name}", status_code=status.HTTP_201_CREATED, response_model=Artifact)
async def upload_artifact(job: UploadingJobDep, name: str, request: Request, storage: StorageDep,
                          store: StoreDep, settings: SettingsDep, lease: Lease = None) -> Artifact:
    target = storage.artifact_path(job.id, name)
    if target is None:
        raise HTTPException(422,
                            detail=f"invalid artifact name {name!r}: letters, digits, '.', '_', '-' only")
    tmp, size = await _receive(request, storage, settings.max_worker_upload_mb)
    _still_leased(store, job.id, lease, tmp)
    storage.commit_artifact(tmp, target)
    return Artifact(name=name, size=size)


Step = Annotated[int, Path(ge=1, le=1_000_000_000, description="The optimizer step the checkpoint was saved at.")]


@router.get("/jobs/{job_id}/checkpoint", response_model=CheckpointInfo)
def latest_checkpoint(job: StoredJobDep, storage: StorageDep) -> CheckpointInfo:
    """The step of the checkpoint kept for this job (null: none), asked by a worker before it trains."""
    return CheckpointInfo(step=storage.latest_checkpoint(job.id))


@router.put("/jobs/{job_id}/checkpoint/{step}", status_code=status.HTTP_201_CREATED, response_model=CheckpointInfo,
            responses={422: {"description": "Not a plain tar, or over the limits on members and unpacked size"}})
async def upload_checkpoint(job: UploadingJobDep, step: Step, request: Request, storage: StorageDep,
                            store: StoreDep, settings: SettingsDep, lease: Lease = None) -> CheckpointInfo:
    """A plain tar of one checkpoint folder; it replaces the job's previous one."""
    tmp, _ = await _receive(request, storage, settings.max_worker_upload_mb)
    try:
        await run_in_threadpool(checkpoint_tar.inspect, tmp, settings.max_worker_upload_mb * 1024 * 1024)
    except tarfile.TarError as exc:
        tmp.unlink(missing_ok=True)
        raise unprocessable(["body"], f"checkpoint refused: {exc}", "invalid_checkpoint")
    _still_leased(store, job.id, lease, tmp)
    storage.commit_checkpoint(tmp, job.id, step)
    return CheckpointInfo(step=step)


@router.get("/jobs/{job_id}/checkpoint/{step}", response_class=FileResponse)
def download_checkpoint(job: StoredJobDep, step: Step, storage: StorageDep) -> FileResponse:
    """The checkpoint's tar, for a worker resuming the job without it on its disk."""
    path = storage.checkpoint_file(job.id, step)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.id} has no checkpoint at step {step}")
    return FileResponse(path, media_type="application/x-tar")


@router.delete("/jobs/{job_id}/checkpoint", status_code=status.HTTP_204_NO_CONTENT)
def delete_checkpoints(job: LeasedJobDep, storage: StorageDep) -> Response:
    """Called once the job has its final artifacts: the checkpoint is no longer needed."""
    storage.delete_checkpoints(job.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

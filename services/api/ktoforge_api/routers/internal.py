"""Worker-only routes (worker token): dataset download, artifact upload, and each job's latest checkpoint.

Through these a worker on another machine needs only REDIS_URL and API_URL; the user key is refused, so a
user cannot plant an artifact in someone's job. The checkpoint kept here lets a job whose worker is gone for
good resume on any other worker of its queue, not only on one that sees the lost worker's disk.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import FileResponse

from ktoforge.schemas import Artifact, CheckpointInfo
from ktoforge_api.deps import SettingsDep, StorageDep, require_worker
from ktoforge_api.routers.jobs import JobDep
from ktoforge_api.storage import TooLarge

router = APIRouter(prefix="/v1/internal", tags=["internal (workers)"], dependencies=[Depends(require_worker)])


@router.get("/datasets/{dataset_id}/file", response_class=FileResponse)
def download_dataset(dataset_id: str, storage: StorageDep) -> FileResponse:
    if not storage.has_dataset(dataset_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"dataset {dataset_id} not found")
    return FileResponse(storage.dataset_file(dataset_id), media_type="application/jsonl")


@router.put("/jobs/{job_id}/artifacts/{name}", status_code=status.HTTP_201_CREATED, response_model=Artifact)
async def upload_artifact(job: JobDep, name: str, request: Request, storage: StorageDep,
                          settings: SettingsDep) -> Artifact:
    target = storage.artifact_path(job.id, name)
    if target is None:
        raise HTTPException(422,
                            detail=f"invalid artifact name {name!r}: letters, digits, '.', '_', '-' only")
    try:
        tmp, _, size = await storage.receive(request.stream(), 64 * settings.max_upload_mb * 1024 * 1024)
    except TooLarge as exc:
        raise HTTPException(413, detail=str(exc))
    storage.commit_artifact(tmp, target)
    return Artifact(name=name, size=size)


Step = Annotated[int, Path(ge=1, le=1_000_000_000, description="The optimizer step the checkpoint was saved at.")]


@router.get("/jobs/{job_id}/checkpoint", response_model=CheckpointInfo)
def latest_checkpoint(job: JobDep, storage: StorageDep) -> CheckpointInfo:
    """The step of the checkpoint kept for this job (null: none), asked by a worker before it trains."""
    return CheckpointInfo(step=storage.latest_checkpoint(job.id))


@router.put("/jobs/{job_id}/checkpoint/{step}", status_code=status.HTTP_201_CREATED, response_model=CheckpointInfo)
async def upload_checkpoint(job: JobDep, step: Step, request: Request, storage: StorageDep,
                            settings: SettingsDep) -> CheckpointInfo:
    """A tar of one checkpoint folder; it replaces the job's previous one."""
    try:
        tmp, _, _ = await storage.receive(request.stream(), 64 * settings.max_upload_mb * 1024 * 1024)
    except TooLarge as exc:
        raise HTTPException(413, detail=str(exc))
    storage.commit_checkpoint(tmp, job.id, step)
    return CheckpointInfo(step=step)


@router.get("/jobs/{job_id}/checkpoint/{step}", response_class=FileResponse)
def download_checkpoint(job: JobDep, step: Step, storage: StorageDep) -> FileResponse:
    """The checkpoint's tar, for a worker resuming the job without it on its disk."""
    path = storage.checkpoint_file(job.id, step)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.id} has no checkpoint at step {step}")
    return FileResponse(path, media_type="application/x-tar")


@router.delete("/jobs/{job_id}/checkpoint", status_code=status.HTTP_204_NO_CONTENT)
def delete_checkpoints(job: JobDep, storage: StorageDep) -> Response:
    """Called once the job has its final artifacts: the checkpoint is no longer needed."""
    storage.delete_checkpoints(job.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

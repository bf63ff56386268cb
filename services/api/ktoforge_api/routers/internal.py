"""Worker-only routes (worker token): dataset download and artifact upload.

Through these a worker on another machine needs only REDIS_URL and API_URL; the user key is refused, so a
user cannot plant an artifact in someone's job.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse

from ktoforge.schemas import Artifact
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

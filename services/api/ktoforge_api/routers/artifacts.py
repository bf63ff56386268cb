"""Reading a job's artifacts (the adapter, tokenizer files, metrics.jsonl, the resolved config)."""

from __future__ import annotations


from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import FileResponse

from ktoforge.schemas import Artifact
from ktoforge_api.deps import StorageDep, StoredJobDep, require_user

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"], dependencies=[Depends(require_user)])



@router.get("/{job_id}/artifacts", response_model=list[Artifact])
def list_artifacts(job: StoredJobDep, storage: StorageDep) -> list[Artifact]:
    return [Artifact(name=n, size=s) for n, s in storage.list_artifacts(job.id)]


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_artifact(job: StoredJobDep, name: str, storage: StorageDep) -> FileResponse:
    path = storage.artifact_path(job.id, name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"invalid artifact name {name!r}")
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.id} has no artifact {name!r}")
    return FileResponse(path, filename=name)

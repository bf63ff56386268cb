"""Dataset upload and reports: validated by the shared pipeline, stored by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ktoforge.dataset.report import build_report
from ktoforge.models import ModelError, tokenizer_dir
from ktoforge.schemas import DatasetReport
from ktoforge_api.deps import SettingsDep, StorageDep, require_user
from ktoforge_api.storage import TooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=[Depends(require_user)])


async def _chunks(upload: UploadFile):
    while chunk := await upload.read(1 << 20):
        yield chunk


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetReport,
             responses={413: {"description": "File larger than KTOFORGE_MAX_UPLOAD_MB"},
                        422: {"description": "Invalid rows: the report lists each line and reason"}})
async def upload_dataset(
    request: Request,
    file: UploadFile,
    settings: SettingsDep,
    storage: StorageDep,
    on_error: Annotated[Literal["reject", "skip"], Query(description="reject: any bad row fails the upload; "
                                                         "skip: keep the valid rows, report the skipped lines")] = "reject",
    model: Annotated[str, Query(max_length=512, description="Model whose tokenizer measures lengths")] = "builtin:tiny-mistral",
    max_length: Annotated[int, Query(ge=16, le=32768, description="Token budget rows are checked against")] = 1024,
) -> JSONResponse:
    """Upload a JSONL dataset (multipart field ``file``); the same bytes always get the same id."""
    try:
        tmp, digest, _ = await storage.receive(_chunks(file), settings.max_upload_mb * 1024 * 1024)
    except TooLarge:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            detail=f"file larger than {settings.max_upload_mb} MiB (KTOFORGE_MAX_UPLOAD_MB)")
    try:
        model_dir = _model_dir(model, settings.model_cache_dir)
        report = await run_in_threadpool(build_report, tmp, model_dir=model_dir, max_length=max_length,
                                         on_error=on_error)
        report.id = digest
        if report.error_count and on_error == "reject":
            return JSONResponse(status_code=422, content={"detail": _error_detail(report),
                                                          "report": report.model_dump(mode="json")})
        if report.rows == 0:
            return JSONResponse(status_code=422, content={"detail": [{"loc": ["file"], "msg": "no usable rows",
                                                                      "type": "empty_dataset"}]})
        if storage.has_dataset(digest):
            return JSONResponse(status_code=200, content=report.model_dump(mode="json"))
        await run_in_threadpool(storage.store_dataset, tmp, digest, report.model_dump_json())
        return JSONResponse(status_code=201, content=report.model_dump(mode="json"))
    finally:
        Path(tmp).unlink(missing_ok=True)


@router.get("/{dataset_id}", response_model=DatasetReport)
def get_dataset(dataset_id: str, storage: StorageDep) -> DatasetReport:
    if not storage.has_dataset(dataset_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"dataset {dataset_id} not found")
    return DatasetReport.model_validate_json(storage.dataset_report(dataset_id).read_text())


def _model_dir(model: str, cache_dir: Path) -> Path | None:
    try:
        return tokenizer_dir(model, cache_dir)
    except ModelError as exc:
        raise HTTPException(422, detail=[{"loc": ["query", "model"], "msg": str(exc), "type": "value_error"}])


def _error_detail(report: DatasetReport) -> list[dict]:
    return [{"loc": ["file", f"line {e.line}"], "msg": e.message, "type": e.kind} for e in report.errors]

"""Dataset upload and reports: validated by the shared pipeline, stored by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ktoforge.dataset.report import build_report
from ktoforge.models import ModelError, check_model, tokenizer_dir
from ktoforge.schemas import DatasetReport
from ktoforge.settings import Settings
from ktoforge_api.deps import SettingsDep, StorageDep, require_user
from ktoforge_api.errors import unprocessable
from ktoforge_api.multipart import BadForm, file_field
from ktoforge_api.storage import TooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=[Depends(require_user)])
MULTIPART_SLACK = 64 * 1024  # room for multipart boundaries and part headers around the file
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "JSONL, one row per line, UTF-8"}},
}}}}}


def check_upload_size(request: Request, settings: SettingsDep) -> None:
    """Refuse a declared oversize body before reading it; the stream is counted again as it is stored."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_mb * 1024 * 1024 + MULTIPART_SLACK:
        raise _too_large(settings)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetReport,
             dependencies=[Depends(check_upload_size)], openapi_extra=UPLOAD_BODY,
             responses={413: {"description": "File larger than KTOFORGE_MAX_UPLOAD_MB"},
                        422: {"description": "Invalid rows: the report lists each line and reason"}})
async def upload_dataset(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    on_error: Annotated[Literal["reject", "skip"], Query(description="reject: any bad row fails the upload; "
                                                         "skip: keep the valid rows, report the skipped lines")] = "reject",
    model: Annotated[str, Query(max_length=512, description="Model whose tokenizer measures lengths")] = "builtin:tiny-mistral",
    max_length: Annotated[int, Query(ge=16, le=32768, description="Token budget rows are checked against")] = 1024,
) -> JSONResponse:
    """Upload a JSONL dataset (multipart field ``file``); the same bytes always get the same id."""
    try:
        check_model(model, settings)  # cheap, so a typo (or a model not allowed here) fails before the upload is read
    except ModelError as exc:
        raise unprocessable(["query", "model"], str(exc))
    limit = settings.max_upload_mb * 1024 * 1024
    try:
        tmp, digest, _ = await storage.receive(file_field(request, "file", limit + MULTIPART_SLACK), limit)
    except TooLarge:
        raise _too_large(settings)
    except BadForm as exc:
        raise unprocessable(["body", "file"], str(exc), "multipart")
    try:
        report = await run_in_threadpool(_validate, tmp, model, settings, max_length, on_error)
        report.id = digest
        if report.error_count and on_error == "reject":
            return JSONResponse(status_code=422, content={"detail": _error_detail(report),
                                                          "report": report.model_dump(mode="json")})
        if report.rows == 0:
            raise unprocessable(["file"], "no usable rows", "empty_dataset")
        if not storage.has_dataset(digest):
            await run_in_threadpool(storage.store_dataset, tmp, digest, report.model_dump_json())
        return JSONResponse(status_code=201, content=report.model_dump(mode="json"))
    finally:
        tmp.unlink(missing_ok=True)


@router.get("/{dataset_id}", response_model=DatasetReport)
def get_dataset(dataset_id: str, storage: StorageDep) -> DatasetReport:
    if not storage.has_dataset(dataset_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"dataset {dataset_id} not found")
    return storage.report(dataset_id)


def _validate(path: Path, model: str, settings: Settings, max_length: int, on_error: str) -> DatasetReport:
    """CPU-bound (and may generate the builtin model once), so it runs in a worker thread."""
    model_dir = tokenizer_dir(model, settings.model_cache_dir, settings)
    return build_report(path, model_dir=model_dir, max_length=max_length, on_error=on_error,
                        processes=settings.dataset_check_processes)


def _too_large(settings: Settings) -> HTTPException:
    return HTTPException(413,
                         detail=f"file larger than {settings.max_upload_mb} MiB (KTOFORGE_MAX_UPLOAD_MB)")


def _error_detail(report: DatasetReport) -> list[dict]:
    return [{"loc": ["file", f"line {e.line}"], "msg": e.message, "type": e.kind} for e in report.errors]

"""Files the API keeps: datasets by content (sha256), job artifacts and each job's latest checkpoint,
always written atomically.

Every path built from a job id checks the id first (ValueError otherwise): a job record planted in Redis
under a key like ``..`` must not name a folder outside the job's own.

A write lands in a temp file in the same directory and is renamed into place, so a crash or a bad upload
never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ktoforge.ids import DATASET_ID, check_job_id, is_job_id
from ktoforge.schemas import DatasetReport

ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHECKPOINT = re.compile(r"checkpoint-(\d+)\.tar")


class TooLarge(ValueError):
    pass


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.datasets = self.root / "datasets"
        self.artifacts = self.root / "artifacts"
        self.checkpoints = self.root / "checkpoints"
        self.tmp = self.root / "tmp"
        for d in (self.datasets, self.artifacts, self.checkpoints, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    async def receive(self, chunks: AsyncIterator[bytes], limit: int) -> tuple[Path, str, int]:
        """Stream an upload to a temp file, hashing as it goes; TooLarge past ``limit`` bytes."""
        digest, size = hashlib.sha256(), 0
        fd, name = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"upload exceeds {limit} bytes")
                    digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name), digest.hexdigest(), size

    def dataset_file(self, dataset_id: str) -> Path:
        return self.datasets / f"{dataset_id}.jsonl"

    def dataset_report(self, dataset_id: str) -> Path:
        return self.datasets / f"{dataset_id}.json"

    def report(self, dataset_id: str) -> DatasetReport:
        """A stored dataset's report (what its upload returned)."""
        return DatasetReport.model_validate_json(self.dataset_report(dataset_id).read_bytes())

    def has_dataset(self, dataset_id: str) -> bool:
        return bool(DATASET_ID.fullmatch(dataset_id)) and self.dataset_report(dataset_id).exists()

    def store_dataset(self, tmp_file: Path, dataset_id: str, report_json: str) -> None:
        """Data first, report last: a dataset exists once its report does."""
        os.replace(tmp_file, self.dataset_file(dataset_id))
        self._write_atomic(self.dataset_report(dataset_id), report_json.encode())

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The artifact's path, or None for a name or job id that could escape the job's folder."""
        if not ARTIFACT_NAME.fullmatch(name) or not is_job_id(job_id):
            return None
        return self.artifacts / job_id / name

    def list_artifacts(self, job_id: str) -> list[tuple[str, int]]:
        folder = self.artifacts / check_job_id(job_id)
        if not folder.is_dir():
            return []
        return sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())

    def commit_artifact(self, tmp_file: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_file, target)

    def latest_checkpoint(self, job_id: str) -> int | None:
        """Step of the job's stored checkpoint (only the latest is kept), or None."""
        folder = self.checkpoints / check_job_id(job_id)
        steps = [int(m[1]) for p in folder.glob("checkpoint-*.tar") if (m := CHECKPOINT.fullmatch(p.name))]
        return max(steps, default=None)

    def checkpoint_file(self, job_id: str, step: int) -> Path:
        return self.checkpoints / check_job_id(job_id) / f"checkpoint-{step}.tar"

    def commit_checkpoint(self, tmp_file: Path, job_id: str, step: int) -> None:
        """The new checkpoint in place first, then the older ones removed: one always stays whole."""
        try:
            target = self.checkpoint_file(job_id, step)
        except ValueError:
            tmp_file.unlink(missing_ok=True)
            raise
        self.commit_artifact(tmp_file, target)
        self.delete_checkpoints(job_id, keep=target)

    def delete_checkpoints(self, job_id: str, keep: Path | None = None) -> None:
        for old in (self.checkpoints / check_job_id(job_id)).glob("checkpoint-*.tar"):
            if old != keep:
                old.unlink(missing_ok=True)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(name, target)

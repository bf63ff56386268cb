"""How a worker talks to the API (worker token): download a dataset, upload artifacts, keep checkpoints.

A worker on another machine (the Mac on the LAN) needs only KTOFORGE_REDIS_URL and KTOFORGE_API_URL.
Uploads carry the job's lease token (LEASE_HEADER): the API takes them only from the lease's holder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from ktoforge import checkpoint_tar
from ktoforge.settings import get_settings

RETRIES = 5
LEASE_HEADER = "X-KTOForge-Lease"


class WorkerClient:
    def __init__(self, api_url: str, worker_token: str, lease: str | None = None,
                 max_checkpoint_mb: int | None = None) -> None:
        """``lease``: the token of the job lease this worker holds (sent with every request, needed for
        uploads); ``max_checkpoint_mb``: most a fetched checkpoint may unpack to (KTOFORGE_MAX_WORKER_UPLOAD_MB)."""
        headers = {"Authorization": f"Bearer {worker_token}", **({LEASE_HEADER: lease} if lease else {})}
        self.http = httpx.Client(base_url=api_url.rstrip("/"), timeout=httpx.Timeout(60, connect=10),
                                 headers=headers)
        self.max_checkpoint_bytes = (max_checkpoint_mb or get_settings().max_worker_upload_mb) * 1024 * 1024

    def _retry(self, do):
        """Retry connection failures and 5xx (an API restarting); 4xx are final."""
        for attempt in range(RETRIES):
            try:
                response = do()
                if response.status_code < 500:
                    response.raise_for_status()
                    return response
            except (httpx.TransportError, httpx.RemoteProtocolError):
                if attempt == RETRIES - 1:
                    raise
            time.sleep(2**attempt)
        response.raise_for_status()
        return response

    def _download(self, url: str, dest_dir: Path, prefix: str) -> Path:
        """GET ``url`` into a new temporary file in ``dest_dir``; the caller moves it into place or removes it.

        A temporary file per download: workers sharing a work dir may fetch the same file at once, and none
        may read or move another's half-written copy.
        """
        tmp = _new_file(dest_dir, prefix, ".part")

        def fetch() -> httpx.Response:
            with self.http.stream("GET", url) as response:
                if response.status_code == 200:
                    with tmp.open("wb") as fh:
                        for chunk in response.iter_bytes(1 << 20):
                            fh.write(chunk)
                return response

        try:
            self._retry(fetch)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _put(self, url: str, path: Path) -> None:
        def put() -> httpx.Response:
            with path.open("rb") as fh:
                return self.http.put(url, content=fh)

        self._retry(put)

    def download_dataset(self, dataset_id: str, dest_dir: Path) -> Path:
        """The dataset's file, cached by content hash (a second job on it downloads nothing)."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / f"{dataset_id}.jsonl"
        if target.exists() and _sha256(target) == dataset_id:
            return target
        tmp = self._download(f"/v1/internal/datasets/{dataset_id}/file", dest_dir, f".{dataset_id}.")
        try:
            if _sha256(tmp) != dataset_id:
                raise RuntimeError(f"dataset {dataset_id} arrived corrupted (hash mismatch)")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def upload_artifact(self, job_id: str, path: Path, name: str | None = None) -> None:
        self._put(f"/v1/internal/jobs/{job_id}/artifacts/{name or path.name}", path)

    def latest_checkpoint(self, job_id: str) -> int | None:
        """Step of the checkpoint the API keeps for this job, or None."""
        return self._retry(lambda: self.http.get(f"/v1/internal/jobs/{job_id}/checkpoint")).json()["step"]

    def upload_checkpoint(self, job_id: str, folder: Path, step: int) -> None:
        """One checkpoint folder, sent as an uncompressed tar (safetensors and optimizer states barely compress)."""
        tmp = _new_file(folder.parent, f".{folder.name}.", ".tar")
        try:
            with tarfile.open(tmp, "w") as tar:
                tar.add(folder, arcname=".")
            self._put(f"/v1/internal/jobs/{job_id}/checkpoint/{step}", tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def download_checkpoint(self, job_id: str, step: int, dest_dir: Path) -> Path:
        """The API's checkpoint unpacked as ``dest_dir/checkpoint-{step}``, in place only once whole.

        Read as a plain tar, its members counted and summed before anything is written (checkpoint_tar):
        what the API keeps is checked there too, but a worker trusts no file it did not write itself."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._download(f"/v1/internal/jobs/{job_id}/checkpoint/{step}", dest_dir, f".checkpoint-{step}.")
        unpacked = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".checkpoint-{step}."))
        target = dest_dir / f"checkpoint-{step}"
        try:
            checkpoint_tar.extract(tmp, unpacked, self.max_checkpoint_bytes)
            shutil.rmtree(target, ignore_errors=True)  # a partial local copy of the same step
            unpacked.rename(target)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(unpacked, ignore_errors=True)
        return target

    def delete_checkpoint(self, job_id: str) -> None:
        self._retry(lambda: self.http.delete(f"/v1/internal/jobs/{job_id}/checkpoint"))


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty file of a name no other process holds, in ``folder`` (so a rename from it is atomic)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

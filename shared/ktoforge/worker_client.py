"""How a worker talks to the API: download a dataset, upload an artifact (worker token).

A worker on another machine (the Mac on the LAN) needs only KTOFORGE_REDIS_URL and KTOFORGE_API_URL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import httpx

RETRIES = 5


class WorkerClient:
    def __init__(self, api_url: str, worker_token: str) -> None:
        self.http = httpx.Client(base_url=api_url.rstrip("/"), timeout=httpx.Timeout(60, connect=10),
                                 headers={"Authorization": f"Bearer {worker_token}"})

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

    def download_dataset(self, dataset_id: str, dest_dir: Path) -> Path:
        """The dataset's file, cached by content hash (a second job on it downloads nothing).

        Workers sharing a work dir may fetch the same dataset at once: each writes its own temporary file
        and renames it into place atomically, so none reads or moves another's half-written copy.
        """
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / f"{dataset_id}.jsonl"
        if target.exists() and _sha256(target) == dataset_id:
            return target
        fd, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{dataset_id}.", suffix=".part")
        os.close(fd)
        tmp = Path(name)

        def fetch() -> httpx.Response:
            with self.http.stream("GET", f"/v1/internal/datasets/{dataset_id}/file") as response:
                if response.status_code == 200:
                    with tmp.open("wb") as fh:
                        for chunk in response.iter_bytes(1 << 20):
                            fh.write(chunk)
                return response

        try:
            self._retry(fetch)
            if _sha256(tmp) != dataset_id:
                raise RuntimeError(f"dataset {dataset_id} arrived corrupted (hash mismatch)")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def upload_artifact(self, job_id: str, path: Path, name: str | None = None) -> None:
        def put() -> httpx.Response:
            with path.open("rb") as fh:
                return self.http.put(f"/v1/internal/jobs/{job_id}/artifacts/{name or path.name}", content=fh)

        self._retry(put)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

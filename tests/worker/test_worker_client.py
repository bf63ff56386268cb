"""The worker's API client against a real API process: cached dataset download, artifact upload."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ktoforge.settings import get_settings
from ktoforge.worker_client import WorkerClient
from tests.conftest import free_port


def test_download_is_cached_by_hash_and_repaired_when_corrupt(api, dataset_id, tmp_path):
    dest = tmp_path / "cache"
    path = WorkerClient(api, "test-worker-token").download_dataset(dataset_id, dest)
    stored = Path(get_settings().data_dir) / "datasets" / f"{dataset_id}.jsonl"
    assert path.read_bytes() == stored.read_bytes()
    dead = WorkerClient(f"http://127.0.0.1:{free_port()}", "test-worker-token")
    assert dead.download_dataset(dataset_id, dest) == path  # cached: no request made
    path.write_text("corrupted")
    assert WorkerClient(api, "test-worker-token").download_dataset(dataset_id, dest).read_bytes() == stored.read_bytes()


def test_upload_puts_the_raw_file_and_client_errors_are_final(api, new_job, tmp_path):
    store, make = new_job
    job_id = make()
    client = WorkerClient(api, "test-worker-token")
    (tmp_path / "adapter.tar").write_bytes(b"\x00tar-bytes" * 1000)
    client.upload_artifact(job_id, tmp_path / "adapter.tar", name="checkpoint-2.tar")
    assert (Path(get_settings().data_dir) / "artifacts" / job_id / "checkpoint-2.tar").read_bytes() == (
        tmp_path / "adapter.tar").read_bytes()
    with pytest.raises(httpx.HTTPStatusError) as err:
        WorkerClient(api, "wrong-token").upload_artifact(job_id, tmp_path / "adapter.tar")
    assert err.value.response.status_code == 401


def test_concurrent_downloads_into_one_dir_all_succeed(api, dataset_id, tmp_path):
    """Two workers sharing a work dir once moved each other's half-written `.part` file away."""
    dest = tmp_path / "shared-cache"
    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda _: WorkerClient(api, "test-worker-token").download_dataset(dataset_id, dest),
                              range(8)))
    stored = Path(get_settings().data_dir) / "datasets" / f"{dataset_id}.jsonl"
    assert {p.read_bytes() for p in paths} == {stored.read_bytes()}
    assert sorted(p.name for p in dest.iterdir()) == [f"{dataset_id}.jsonl"]  # no temporary file left behind

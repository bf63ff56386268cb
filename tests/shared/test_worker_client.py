"""The worker's API client against a real API process: cached dataset download, artifact upload, checkpoints."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings
from ktoforge.worker_client import WorkerClient
from tests.conftest import free_port

LEASE = "test-host:1:5b0c1f0e9a8d4c7b8e6f5a4d3c2b1a09"


def running(new_job) -> str:
    """A job in the state uploads need: running, its lease held by LEASE (what run_job does before training)."""
    store, make = new_job
    job_id = make()
    store.transition(job_id, JobStatus.running)
    assert store.acquire_lease(job_id, LEASE, 60)
    return job_id


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
    job_id = running(new_job)
    client = WorkerClient(api, "test-worker-token", lease=LEASE)
    (tmp_path / "adapter.tar").write_bytes(b"\x00tar-bytes" * 1000)
    client.upload_artifact(job_id, tmp_path / "adapter.tar", name="checkpoint-2.tar")
    assert (Path(get_settings().data_dir) / "artifacts" / job_id / "checkpoint-2.tar").read_bytes() == (
        tmp_path / "adapter.tar").read_bytes()
    with pytest.raises(httpx.HTTPStatusError) as err:
        WorkerClient(api, "wrong-token", lease=LEASE).upload_artifact(job_id, tmp_path / "adapter.tar")
    assert err.value.response.status_code == 401
    with pytest.raises(httpx.HTTPStatusError) as err:
        WorkerClient(api, "test-worker-token").upload_artifact(job_id, tmp_path / "adapter.tar")  # no lease
    assert err.value.response.status_code == 403


def test_concurrent_downloads_into_one_dir_all_succeed(api, dataset_id, tmp_path):
    """Two workers sharing a work dir once moved each other's half-written `.part` file away."""
    dest = tmp_path / "shared-cache"
    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda _: WorkerClient(api, "test-worker-token").download_dataset(dataset_id, dest),
                              range(8)))
    stored = Path(get_settings().data_dir) / "datasets" / f"{dataset_id}.jsonl"
    assert {p.read_bytes() for p in paths} == {stored.read_bytes()}
    assert sorted(p.name for p in dest.iterdir()) == [f"{dataset_id}.jsonl"]  # no temporary file left behind


def test_checkpoint_round_trip_keeps_only_the_latest(api, new_job, tmp_path):
    job_id = running(new_job)
    client = WorkerClient(api, "test-worker-token", lease=LEASE)
    assert client.latest_checkpoint(job_id) is None
    for step in (2, 4):
        folder = tmp_path / "here" / f"checkpoint-{step}"
        (folder / "sub").mkdir(parents=True)
        (folder / "adapter.safetensors").write_bytes(bytes(range(256)) * step)
        (folder / "sub" / "state.json").write_text(f'{{"global_step": {step}}}')
        client.upload_checkpoint(job_id, folder, step)
    assert client.latest_checkpoint(job_id) == 4
    stored = Path(get_settings().data_dir) / "checkpoints" / job_id
    assert [p.name for p in stored.iterdir()] == ["checkpoint-4.tar"]
    assert [p.name for p in (tmp_path / "here").iterdir() if p.name.startswith(".")] == []  # no tar left behind

    got = client.download_checkpoint(job_id, 4, tmp_path / "elsewhere")
    assert got == tmp_path / "elsewhere" / "checkpoint-4"
    assert (got / "adapter.safetensors").read_bytes() == bytes(range(256)) * 4
    assert (got / "sub" / "state.json").read_text() == '{"global_step": 4}'
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["checkpoint-4"]

    with pytest.raises(httpx.HTTPStatusError) as err:
        WorkerClient(api, "test-api-key").latest_checkpoint(job_id)  # the user key opens no worker route
    assert err.value.response.status_code == 401
    client.delete_checkpoint(job_id)
    assert client.latest_checkpoint(job_id) is None


def test_a_checkpoint_that_would_escape_its_folder_is_refused(api, new_job, tmp_path):
    job_id = running(new_job)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"pwn"))
    r = httpx.put(f"{api}/v1/internal/jobs/{job_id}/checkpoint/1", content=evil.read_bytes(),
                  headers={"Authorization": "Bearer test-worker-token", "X-KTOForge-Lease": LEASE})
    assert r.status_code == 422 and "outside" in r.text  # the API keeps no such tar
    stored = Path(get_settings().data_dir) / "checkpoints" / job_id / "checkpoint-1.tar"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(evil.read_bytes())  # planted behind the API's back: the worker refuses it as well
    with pytest.raises(tarfile.FilterError):
        WorkerClient(api, "test-worker-token").download_checkpoint(job_id, 1, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()
    assert list((tmp_path / "dest").iterdir()) == []  # nothing half-unpacked stays

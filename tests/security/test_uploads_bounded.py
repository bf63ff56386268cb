"""Finding 6: worker uploads are bounded.

Artifacts and checkpoints are accepted only for a running job, from the worker holding its lease; a
checkpoint is a plain tar whose members are counted and summed before anything is unpacked, by the API when
it arrives and by the worker that fetches it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from ktoforge.checkpoint_tar import MAX_MEMBERS
from ktoforge.jobs import JobStore
from ktoforge.schemas import JobStatus
from ktoforge.worker_client import LEASE_HEADER, WorkerClient

LEASE = "cuda@host-a:4242:0f9c2b6de4d94b1c8a3f0e6b7c5d1a29"


def _tar(mode: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def xz_bomb() -> bytes:
    """15 KB that unpack to 100 MiB: a tar of zeros, xz-compressed (tarfile's "r:*" opened it unasked)."""
    return _tar("w:xz", {"optimizer.pt": bytes(100 << 20)})


def sparse_bomb(real_size: int = 10 << 30) -> bytes:
    """1.5 KB of plain tar whose one GNU sparse member unpacks to ``real_size`` bytes: only the sum of the
    members' sizes, not the upload's, tells."""
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 0
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    octal = lambda n: b"%011o\0" % n  # noqa: E731
    header[386:398], header[398:410], header[483:495] = octal(0), octal(0), octal(real_size)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    return bytes(header) + bytes(1024)


def _running(kf_env, job_id: str, owner: str = LEASE) -> JobStore:
    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    store.transition(job_id, JobStatus.running, worker="cuda@host-a")
    assert store.acquire_lease(job_id, owner, 60)
    return store


def test_uploads_only_for_a_running_job_from_the_worker_holding_its_lease(client, worker, dataset_id,
                                                                          kf_env):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    checkpoint = _tar("w", {"trainer_state.json": b'{"global_step": 1}'})

    def put(lease: str | None):
        headers = {LEASE_HEADER: lease} if lease else {}
        return (worker.put(f"/v1/internal/jobs/{job_id}/artifacts/adapter.bin", content=b"x", headers=headers),
                worker.put(f"/v1/internal/jobs/{job_id}/checkpoint/1", content=checkpoint, headers=headers))

    assert [r.status_code for r in put(LEASE)] == [409, 409]  # queued: no worker trains it
    store = _running(kf_env, job_id)
    for lease in (None, "cuda@host-b:1:other", LEASE + "0", LEASE[:-1]):
        answers = put(lease)
        assert [r.status_code for r in answers] == [403, 403], (lease, [r.text for r in answers])
    assert worker.delete(f"/v1/internal/jobs/{job_id}/checkpoint").status_code == 403
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []
    assert worker.get(f"/v1/internal/jobs/{job_id}/checkpoint").json() == {"step": None}
    assert [r.status_code for r in put(LEASE)] == [201, 201]  # the lease holder
    store.transition(job_id, JobStatus.succeeded)
    assert [r.status_code for r in put(LEASE)] == [409, 409]  # finished: its artifacts are final


def test_an_xz_bomb_checkpoint_is_refused_by_the_api_and_by_the_worker(client, worker, dataset_id, kf_env,
                                                                       live_api, tmp_path):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    _running(kf_env, job_id)
    bomb = xz_bomb()
    assert len(bomb) < 20_000
    r = worker.put(f"/v1/internal/jobs/{job_id}/checkpoint/1", content=bomb, headers={LEASE_HEADER: LEASE})
    assert r.status_code == 422 and "plain tar" in r.text, r.text
    assert worker.get(f"/v1/internal/jobs/{job_id}/checkpoint").json() == {"step": None}
    # Planted behind the API's back (a disk shared with someone else): the worker refuses it too.
    stored = Path(kf_env["KTOFORGE_DATA_DIR"]) / "checkpoints" / job_id / "checkpoint-1.tar"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(bomb)
    dest = tmp_path / "worker-checkpoints"
    with pytest.raises(tarfile.TarError, match="plain tar"):
        WorkerClient(live_api.url, "test-worker-token").download_checkpoint(job_id, 1, dest)
    assert [p for p in dest.rglob("*")] == []  # nothing unpacked, no temporary file left


def test_checkpoints_too_big_unpacked_or_with_too_many_members_are_refused(client, worker, dataset_id,
                                                                           kf_env, live_api, tmp_path):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    _running(kf_env, job_id)
    many = _tar("w", {f"f{i}": b"" for i in range(MAX_MEMBERS + 1)})
    for body, says in ((sparse_bomb(), "KTOFORGE_MAX_WORKER_UPLOAD_MB"), (many, f"more than {MAX_MEMBERS}")):
        r = worker.put(f"/v1/internal/jobs/{job_id}/checkpoint/2", content=body, headers={LEASE_HEADER: LEASE})
        assert r.status_code == 422 and says in r.text, r.text
    stored = Path(kf_env["KTOFORGE_DATA_DIR"]) / "checkpoints" / job_id / "checkpoint-2.tar"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(sparse_bomb())
    with pytest.raises(tarfile.TarError, match="KTOFORGE_MAX_WORKER_UPLOAD_MB"):
        WorkerClient(live_api.url, "test-worker-token").download_checkpoint(job_id, 2, tmp_path / "dest")
    assert list((tmp_path / "dest").rglob("*")) == []
    good = _tar("w", {"adapter_model.safetensors": bytes(1000), "trainer_state.json": b"{}"})
    r = worker.put(f"/v1/internal/jobs/{job_id}/checkpoint/3", content=good, headers={LEASE_HEADER: LEASE})
    assert r.status_code == 201, r.text
    got = WorkerClient(live_api.url, "test-worker-token").download_checkpoint(job_id, 3, tmp_path / "dest")
    assert (got / "adapter_model.safetensors").read_bytes() == bytes(1000)


def test_the_worker_client_sends_its_lease(live_api, client, dataset_id, kf_env, tmp_path):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    _running(kf_env, job_id)
    (tmp_path / "adapter.bin").write_bytes(b"weights")
    with pytest.raises(httpx.HTTPStatusError) as err:
        WorkerClient(live_api.url, "test-worker-token", lease="someone-else").upload_artifact(
            job_id, tmp_path / "adapter.bin")
    assert err.value.response.status_code == 403
    WorkerClient(live_api.url, "test-worker-token", lease=LEASE).upload_artifact(job_id, tmp_path / "adapter.bin")
    assert client.get(f"/v1/jobs/{job_id}/artifacts/adapter.bin").content == b"weights"

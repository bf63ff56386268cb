"""Worker routes (worker token only) and artifact download, with names that cannot leave the job's folder."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore
from ktoforge.schemas import JobStatus
from ktoforge.worker_client import LEASE_HEADER


def running(kf_env: dict[str, str], job_id: str, owner: str = "cuda@test:1") -> dict[str, str]:
    """The job as a worker holds it while training (uploads are taken only then); the lease header to send."""
    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    store.transition(job_id, JobStatus.running, worker="cuda@test")
    assert store.acquire_lease(job_id, owner, 60)
    return {LEASE_HEADER: owner}


def test_worker_uploads_and_user_downloads(client: TestClient, worker: TestClient, dataset_id: str, kf_env):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []
    lease = running(kf_env, job_id)
    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    r = worker.put(f"/v1/internal/jobs/{job_id}/artifacts/adapter_model.safetensors", content=payload, headers=lease)
    assert r.status_code == 201 and r.json() == {"name": "adapter_model.safetensors", "size": len(payload)}
    worker.put(f"/v1/internal/jobs/{job_id}/artifacts/metrics.jsonl", content=b'{"loss": 1}\n', headers=lease)
    r = worker.put(f"/v1/internal/jobs/{job_id}/artifacts/metrics.jsonl", content=b'{"loss": 0.5}\n',
                   headers=lease)  # replaced
    assert r.status_code == 201

    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert listed == [{"name": "adapter_model.safetensors", "size": len(payload)},
                      {"name": "metrics.jsonl", "size": 14}]
    got = client.get(f"/v1/jobs/{job_id}/artifacts/adapter_model.safetensors")
    assert got.status_code == 200 and got.content == payload
    assert client.get(f"/v1/jobs/{job_id}/artifacts/metrics.jsonl").content == b'{"loss": 0.5}\n'
    assert client.get(f"/v1/jobs/{job_id}/artifacts/missing.bin").status_code == 404
    leftovers = list((Path(kf_env["KTOFORGE_DATA_DIR"]) / "tmp").iterdir())
    assert leftovers == []  # every upload was renamed into place


def test_worker_routes_refuse_the_user_key(client: TestClient, anon: TestClient, dataset_id: str):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    for c in (client, anon):
        assert c.put(f"/v1/internal/jobs/{job_id}/artifacts/x.bin", content=b"x").status_code == 401
        assert c.get(f"/v1/internal/datasets/{dataset_id}/file").status_code == 401
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []


def test_worker_downloads_the_dataset(worker: TestClient, dataset_id: str, reference_dataset: Path):
    r = worker.get(f"/v1/internal/datasets/{dataset_id}/file")
    assert r.status_code == 200 and r.content == reference_dataset.read_bytes()
    assert worker.get(f"/v1/internal/datasets/{'0' * 64}/file").status_code == 404
    assert worker.get("/v1/internal/datasets/..%2F..%2Fetc%2Fpasswd/file").status_code == 404


def test_upload_to_unknown_job_is_404(worker: TestClient):
    assert worker.put(f"/v1/internal/jobs/{'0' * 32}/artifacts/x.bin", content=b"x").status_code == 404


def test_traversal_names_are_rejected(client: TestClient, worker: TestClient, dataset_id: str, kf_env):
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    lease = running(kf_env, job_id)
    secret = Path(kf_env["KTOFORGE_DATA_DIR"]) / "datasets" / f"{dataset_id}.json"
    # a literal ".." is removed by the HTTP client itself (dot segments), so it travels encoded here
    for name in ("...", ".hidden", "..%2F..%2Fdatasets%2F" + secret.name, "%2E%2E", "a%5Cb", "a%00b",
                 "x" * 129):
        put = worker.put(f"/v1/internal/jobs/{job_id}/artifacts/{name}", content=b"evil", headers=lease)
        assert put.status_code in (404, 422), (name, put.status_code)
        get = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        assert get.status_code == 404, (name, get.status_code)
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []
    assert b"evil" not in secret.read_bytes()

"""Liveness, readiness (Redis, workers and waiting jobs per queue), and the API's import footprint."""

from __future__ import annotations

import subprocess
import sys
import time

from fastapi.testclient import TestClient

from tests.api.conftest import make_client
from tests.conftest import free_port


def test_healthz_needs_no_key(anon: TestClient):
    assert anon.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_queues_and_waiting_jobs(client: TestClient, anon: TestClient, dataset_id: str):
    client.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx"})
    r = anon.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["redis"] is True
    assert set(body["queues"]) == {"cuda", "mlx"}
    for name, queue in body["queues"].items():
        assert queue["workers"] == [] and queue["ready"] is False  # no worker runs in this test
    assert body["queues"]["mlx"]["queued_jobs"] == 1
    assert body["queues"]["cuda"]["queued_jobs"] == 0


def test_readyz_is_503_without_redis(kf_env, monkeypatch):
    monkeypatch.setenv("KTOFORGE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    from ktoforge.settings import get_settings

    get_settings.cache_clear()
    r = make_client().get("/readyz")  # no lifespan: the reaper is not started against a dead Redis
    assert r.status_code == 503
    assert r.json()["redis"] is False


def test_api_never_imports_ml_frameworks():
    code = ("import sys, ktoforge_api.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'mlx', 'mlx_lm', 'peft', 'unsloth') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_readyz_sees_a_real_worker(client: TestClient, kf_env, tmp_path):
    """A plain Celery worker consuming the cuda queue (no training code: nothing is queued for it)."""
    celery = [sys.executable, "-m", "celery", f"--broker={kf_env['KTOFORGE_REDIS_URL']}", "worker", "-Q", "cuda",
              "-P", "solo", "-n", "probe@test", "--without-gossip", "--without-mingle", "-l", "warning"]
    proc = subprocess.Popen(celery, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            queues = client.get("/readyz").json()["queues"]
            if queues["cuda"]["ready"]:
                break
            time.sleep(0.5)
        assert queues["cuda"] == {"workers": ["probe@test"], "ready": True, "queued_jobs": 0, "messages": 0}
        assert queues["mlx"]["ready"] is False
    finally:
        proc.terminate()
        proc.wait(30)


def test_openapi_documents_every_route(anon: TestClient):
    paths = anon.get("/openapi.json").json()["paths"]
    assert {"/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/artifacts/{name}",
            "/v1/internal/jobs/{job_id}/artifacts/{name}", "/readyz"} <= set(paths)
    assert anon.get("/docs").status_code == 200


def test_cors_is_closed_unless_origins_are_listed(kf_env, monkeypatch):
    from ktoforge.settings import get_settings

    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "GET"}
    closed = make_client().options("/v1/jobs", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    monkeypatch.setenv("KTOFORGE_CORS_ORIGINS", '["http://ui.example"]')
    get_settings.cache_clear()
    app = make_client()
    assert app.options("/v1/jobs", headers=preflight).headers["access-control-allow-origin"] == "http://ui.example"
    other = app.options("/v1/jobs", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_every_v1_route_needs_a_key(anon: TestClient):
    paths = anon.get("/openapi.json").json()["paths"]
    routes = [(method, path) for path, ops in paths.items() if path.startswith("/v1/") for method in ops]
    assert len(routes) >= 11
    for method, path in routes:
        url = path.format(job_id="0" * 32, dataset_id="0" * 64, name="x.bin", step=1)
        r = anon.request(method.upper(), url)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.status_code)

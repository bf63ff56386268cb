"""Liveness, readiness (Redis; for a key holder, workers and waiting jobs per queue), and the API's import
footprint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore

from tests.api.conftest import USER, make_client
from tests.conftest import free_port

PATH_VALUES = {"job_id": "0" * 32, "dataset_id": "0" * 64, "name": "x.bin", "step": "1"}


def test_healthz_needs_no_key(anon: TestClient):
    assert anon.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_queues_and_waiting_jobs(client: TestClient, dataset_id: str):
    client.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx"})
    cancelled = client.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "mlx"}).json()["id"]
    client.post(f"/v1/jobs/{cancelled}/cancel")
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["redis"] is True
    assert set(body["queues"]) == {"cuda", "mlx"}
    for name, queue in body["queues"].items():
        assert queue["workers"] == [] and queue["ready"] is False  # no worker runs in this test
    assert body["queues"]["mlx"]["queued_jobs"] == 1
    assert body["queues"]["cuda"]["queued_jobs"] == 0


def test_readyz_is_503_without_redis(kf_env, monkeypatch):
    monkeypatch.setenv("KTOFORGE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    from ktoforge.settings import get_settings

    get_settings.cache_clear()
    app = make_client()  # no lifespan: the reaper is not started against a dead Redis
    started = time.monotonic()
    r = app.get("/readyz")
    assert r.status_code == 503 and r.json() == {"ready": False}
    assert time.monotonic() - started < 5  # the probe does not retry
    keyed = app.get("/readyz", headers=USER)
    assert keyed.status_code == 503 and keyed.json() == {"ready": False, "redis": False, "queues": {}}


def test_api_never_imports_ml_frameworks():
    code = ("import sys, ktoforge_api.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'mlx', 'mlx_lm', 'peft', 'unsloth') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def wait_queues(client: TestClient, ready: bool, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        queues = client.get("/readyz").json()["queues"]
        if queues["cuda"]["ready"] is ready or time.monotonic() > deadline:
            return queues
        time.sleep(0.3)


def test_readyz_sees_a_real_worker_come_and_go(client: TestClient, anon: TestClient, kf_env, tmp_path):
    """A Celery worker of our app (make_celery: its presence keys) consuming the cuda queue, with no training
    code (nothing is queued for it). Anonymous callers never see its name; it leaves as soon as it stops."""
    code = ("import sys; from ktoforge.queue import make_celery; make_celery().worker_main(sys.argv[1:])")
    celery = [sys.executable, "-c", code, "worker", "-Q", "cuda", "-P", "solo", "-n", "probe@test",
              "--without-gossip", "--without-mingle", "-l", "warning"]
    proc = subprocess.Popen(celery, cwd=tmp_path, env={**os.environ, "KTOFORGE_HEARTBEAT_INTERVAL_S": "0.5"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        queues = wait_queues(client, ready=True)
        device = queues["cuda"].pop("devices")["probe@test"]
        assert queues["cuda"] == {"workers": ["probe@test"], "ready": True, "queued_jobs": 0, "messages": 0}
        assert device["kind"] in ("cuda", "apple", "cpu") and device["memory_total_gb"] > 0, device
        assert queues["mlx"]["ready"] is False
        assert "probe" not in anon.get("/readyz").text
        info = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"]).workers()["cuda"][0]
        assert info["pid"] == proc.pid and info["queue"] == "cuda"
    finally:
        proc.terminate()
        proc.wait(30)
    assert wait_queues(client, ready=False, timeout=5)["cuda"]["workers"] == []  # withdrawn, not left to expire


def test_openapi_documents_every_public_route(anon: TestClient):
    paths = anon.get("/openapi.json").json()["paths"]
    assert {"/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/artifacts/{name}",
            "/readyz"} <= set(paths)
    assert not any(p.startswith("/v1/internal") for p in paths)  # workers' routes: routed, not advertised
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
    from ktoforge_api.routers import internal

    paths = anon.get("/openapi.json").json()["paths"]
    routes = [(method, path) for path, ops in paths.items() if path.startswith("/v1/") for method in ops]
    routes += [(method, route.path) for route in internal.router.routes for method in route.methods]  # unlisted
    assert len(routes) >= 11 and any(path.startswith("/v1/internal/") for _, path in routes)
    for method, path in routes:
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], "x"), path)
        r = anon.request(method.upper(), url)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.status_code)

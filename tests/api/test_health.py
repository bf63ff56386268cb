"""Liveness, readiness (Redis, workers and waiting jobs per queue), and the API's import footprint."""

from __future__ import annotations

import subprocess
import sys

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

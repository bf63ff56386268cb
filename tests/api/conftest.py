"""The API app against the tests' own redis and a fresh data dir; clients with the user key and worker token."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import free_port

USER = {"Authorization": "Bearer test-api-key"}
WORKER = {"Authorization": "Bearer test-worker-token"}


def make_client(headers: dict[str, str] | None = None) -> TestClient:
    """A fresh app built from the current environment (caches cleared so it sees this test's settings)."""
    from ktoforge_api import deps
    from ktoforge_api.main import create_app

    deps.get_store.cache_clear()
    deps.get_probe.cache_clear()
    deps.get_celery.cache_clear()
    return TestClient(create_app(), headers=headers or {})


@pytest.fixture()
def client(kf_env: dict[str, str], redis_client) -> Iterator[TestClient]:
    """Runs the app's lifespan (reaper included), authenticated with the user key."""
    with make_client(USER) as c:
        yield c


@pytest.fixture()
def anon(client: TestClient) -> TestClient:
    """The same app without credentials."""
    return TestClient(client.app)


@pytest.fixture()
def worker(client: TestClient) -> TestClient:
    """The same app with the worker token."""
    return TestClient(client.app, headers=WORKER)


def upload(client: TestClient, path: Path, **params: str):
    with path.open("rb") as fh:
        return client.post("/v1/datasets", params=params, files={"file": (path.name, fh, "application/jsonl")})


@pytest.fixture()
def dataset_id(client: TestClient, reference_dataset: Path) -> str:
    r = upload(client, reference_dataset)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class LiveApi:
    url: str
    proc: subprocess.Popen


@pytest.fixture()
def live_api(kf_env: dict[str, str], redis_client, tmp_path: Path) -> Iterator[LiveApi]:
    port = free_port()
    env = {**os.environ, **kf_env, "KTOFORGE_API_HOST": "127.0.0.1", "KTOFORGE_API_PORT": str(port)}
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield LiveApi(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()

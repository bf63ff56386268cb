"""Beyond loopback, the API, a worker and Flower refuse placeholder and development secrets, as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ktoforge.secret_guard import check_api, check_flower, check_worker, is_loopback
from ktoforge.settings import Settings
from tests.conftest import ROOT, free_port

BIN = Path(sys.executable).parent
UNROUTABLE = "192.0.2.1"  # TEST-NET-1: not loopback, and nothing ever answers there
WORKER = [str(BIN / "celery"), "-A", "ktoforge_worker.app", "worker", "-Q", "cuda", "-P", "solo"]
GOOD = {"api_key": "k" * 43, "worker_token": "t" * 43, "flower_password": "f" * 43}


def example_env_dir(tmp_path: Path) -> dict[str, str]:
    """``tmp_path`` holding .env.example's values as .env; the environment without any KTOFORGE_/FLOWER_."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    return {k: v for k, v in os.environ.items() if not k.startswith(("KTOFORGE_", "FLOWER_"))}


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A real start; without the guard these would serve (API) or retry their broker forever (timeout)."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_api_on_all_interfaces_with_the_example_values_exits_naming_each_variable(tmp_path):
    env = {**example_env_dir(tmp_path), "KTOFORGE_API_HOST": "0.0.0.0"}
    result = run([sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", "0.0.0.0",
                  "--port", str(free_port())], tmp_path, env)  # as `ktoforge up` starts it
    assert result.returncode == 1, result.stderr[-2000:]
    assert "api refuses to start: it is reachable beyond loopback ('0.0.0.0')" in result.stderr
    for variable in ("KTOFORGE_API_KEY", "KTOFORGE_WORKER_TOKEN", "KTOFORGE_REDIS_URL's password"):
        assert f"{variable}" in result.stderr
    assert "still the placeholder from .env.example" in result.stderr and "ktoforge init" in result.stderr


def test_worker_joining_a_remote_redis_with_the_example_values_exits_naming_them(tmp_path):
    env = {**example_env_dir(tmp_path), "KTOFORGE_REDIS_URL": f"redis://:change-me-redis-password@{UNROUTABLE}:6390/0"}
    result = run(WORKER, tmp_path, env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"worker refuses to start: it is reachable beyond loopback ('{UNROUTABLE}')" in result.stderr
    assert "KTOFORGE_WORKER_TOKEN is still the placeholder" in result.stderr
    assert "KTOFORGE_REDIS_URL's password (KTOFORGE_REDIS_PASSWORD) is still the placeholder" in result.stderr


def test_worker_with_development_defaults_and_a_remote_api_exits(tmp_path):
    """No .env at all: the built-in dev token, and a passwordless Redis on another host, are refused too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTOFORGE_")}
    env.update(KTOFORGE_REDIS_URL=f"redis://{UNROUTABLE}:6390/0", KTOFORGE_API_URL=f"http://{UNROUTABLE}:8000")
    result = run(WORKER, tmp_path, env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "KTOFORGE_WORKER_TOKEN is the built-in development value 'dev-worker-token'" in result.stderr
    assert f"is empty while Redis is at {UNROUTABLE}" in result.stderr


def test_flower_on_all_interfaces_with_the_example_values_exits_naming_them(tmp_path):
    env = {**example_env_dir(tmp_path), "FLOWER_BASIC_AUTH": "admin:change-me-flower-password"}
    result = run([str(BIN / "celery"), "-A", "ktoforge_worker.app", "flower", "--address=0.0.0.0",
                  f"--port={free_port()}"], tmp_path, env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "flower refuses to start: it is reachable beyond loopback ('0.0.0.0')" in result.stderr
    assert "KTOFORGE_FLOWER_PASSWORD (Flower's basic auth) is still the placeholder" in result.stderr
    assert "KTOFORGE_REDIS_URL's password (KTOFORGE_REDIS_PASSWORD) is still the placeholder" in result.stderr


def test_flower_without_a_login_on_all_interfaces_exits(tmp_path):
    """Flower's default address ('') is every interface; no basic auth there is refused as well."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KTOFORGE_", "FLOWER_"))}
    env["KTOFORGE_REDIS_URL"] = "redis://:a-real-password@127.0.0.1:6390/0"
    result = run([str(BIN / "celery"), "-A", "ktoforge_worker.app", "flower", f"--port={free_port()}"], tmp_path, env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "'' (all interfaces)" in result.stderr and "Flower has no login" in result.stderr


def test_loopback_means_literal_loopback_only():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", None))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.168.1.20", "redis", "api", "example.com"))


def test_on_loopback_the_development_values_are_allowed():
    """`make dev` with no .env: the built-in values, on 127.0.0.1 everywhere."""
    settings = Settings(_env_file=None)
    check_api(settings)
    check_worker(settings)
    check_flower(settings, "127.0.0.1", [], "")


def test_real_secrets_beyond_loopback_are_accepted():
    settings = Settings(_env_file=None, api_host="0.0.0.0", redis_url=f"redis://:{'r' * 43}@redis:6379/0",
                        api_url="http://api:8000", **GOOD)
    check_api(settings)
    check_worker(settings)
    check_flower(settings, "0.0.0.0", [f"admin:{'f' * 43}"], "")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_api_key_equal_to_the_worker_token_is_refused_everywhere(host):
    """An equal pair would let every user key into the worker-only routes."""
    settings = Settings(_env_file=None, api_host=host, api_key="same-value", worker_token="same-value")
    with pytest.raises(SystemExit, match="KTOFORGE_API_KEY equals KTOFORGE_WORKER_TOKEN"):
        check_api(settings)


def test_flower_development_password_and_empty_secrets_are_refused():
    settings = Settings(_env_file=None, redis_url=f"redis://:{'r' * 43}@127.0.0.1:6390/0")
    with pytest.raises(SystemExit, match="'dev-flower-password'"):
        check_flower(settings, "192.168.1.20", ["admin:dev-flower-password"], "")
    empty_key = Settings(_env_file=None, api_host="0.0.0.0", api_key="", worker_token="t" * 43)
    with pytest.raises(SystemExit, match="KTOFORGE_API_KEY is empty"):
        check_api(empty_key)

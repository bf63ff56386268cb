"""Fixtures with real processes: a redis-server of the tests' own (never port 6379), settings env."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests import outcomes

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATASET = ROOT / "datasets" / "syngen_toolset_v1.0.0_claude.jsonl"  # the repository's own copy (MIT)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Each test's lost jobs and server errors ride on its teardown report (tests/outcomes.py says why)."""
    report = yield
    if report.when == "teardown":
        report.user_properties.append((outcomes.KEY, outcomes.take()))
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files that start whole systems or train first: the fault files (the longest) with the most tests
    first, then tests/system's others and the files marked slow, then the rest, each in its order. make test's
    workers (pytest-xdist, one file at a time, --no-loadscope-reorder) are dealt the long files first and the
    short ones even out the end, instead of one worker running the last long file while the other idles."""
    system, fault = ROOT / "tests" / "system", ROOT / "tests" / "system" / "fault"
    count = Counter(item.path for item in items)
    heavy = {item.path for item in items if system in item.path.parents or item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        if fault in item.path.parents:
            return 0, -count[item.path]
        return (1, 0) if item.path in heavy else (2, 0)

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    outcomes.write_summary(terminalreporter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, log: Path, tries: int = 300) -> None:
    """Until ``url`` answers 200 (a server child starting up); else the test fails showing the server's log."""
    for _ in range(tries):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(log.read_text())


@contextmanager
def server_child(cmd: list[str], health_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """A server started as a child process, until ``health_url`` answers; stopped when the block ends."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(health_url, log)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


class RedisServer:
    """A redis-server child with append-only persistence, restartable on the same port and data dir."""

    def __init__(self, data_dir: Path, password: str = "test-redis-pass") -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.port != 6379
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--save", "", "--requirepass", self.password,
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def kf_env(redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """KTOFORGE_* variables pointing at the test redis and a fresh data/work dir (also for child processes)."""
    from ktoforge.settings import get_settings

    env = {
        "KTOFORGE_REDIS_URL": redis_server.url,
        "KTOFORGE_API_KEY": "test-api-key",
        "KTOFORGE_WORKER_TOKEN": "test-worker-token",
        "KTOFORGE_DATA_DIR": str(tmp_path / "data"),
        "KTOFORGE_WORK_DIR": str(tmp_path / "work"),
        "KTOFORGE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def reference_dataset() -> Path:
    if not REFERENCE_DATASET.exists():
        pytest.fail(f"reference dataset missing at {REFERENCE_DATASET} (it is part of the repository: datasets/)")
    return REFERENCE_DATASET


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from ktoforge.builtin_model import TINY_MISTRAL, builtin_path

    return builtin_path(TINY_MISTRAL, ROOT / "var" / "models")

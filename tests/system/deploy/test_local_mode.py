"""`ktoforge up` (what `make dev` runs) as a real process tree: it serves, restarts a crashed child, stops clean."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from ktoforge.local import redis_config_line
from tests.conftest import free_port
from tests.system import FINISHED, System, start_system, stop_system, upload, wait_status
from tests.job_fixtures import subset

KTOFORGE = str(Path(sys.executable).parent / "ktoforge")


def alive(pids: list[int]) -> list[int]:
    """Those still running (a zombie has exited; its parent just has not reaped it yet)."""
    return [p for p in pids if os.path.exists(f"/proc/{p}") and "zombie" not in open(f"/proc/{p}/status").read()]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.3)


@pytest.mark.slow
def test_up_serves_restarts_a_crashed_worker_and_stops_every_child(tmp_path):
    system: System = start_system(tmp_path, ["cuda"], flower_password="deploy-flower-pass")
    try:
        env = system.env
        banner = system.log.read_text()
        assert f"API      {system.url}" in banner and f"{system.url}/docs" in banner
        assert "API key  from KTOFORGE_API_KEY" in banner and env["KTOFORGE_API_KEY"] not in banner
        assert f"Flower   http://127.0.0.1:{env['KTOFORGE_FLOWER_PORT']}" in banner
        assert httpx.get(f"{system.url}/healthz", timeout=10).status_code == 200
        flower = f"http://127.0.0.1:{env['KTOFORGE_FLOWER_PORT']}/"
        assert httpx.get(flower, timeout=10).status_code == 401
        assert httpx.get(flower, auth=(env.get("KTOFORGE_FLOWER_USER", "admin"), "deploy-flower-pass"), timeout=10).status_code == 200
        command_lines = " ".join(open(f"/proc/{p}/cmdline").read() for p in system.pids(""))
        assert "deploy-flower-pass" not in command_lines
        assert env["KTOFORGE_REDIS_PASSWORD"] not in command_lines  # redis-server reads it from stdin

        # Its own redis-server: password required, append-only file in the data dir, never evicts.
        port = int(env["KTOFORGE_REDIS_PORT"])
        assert port != 6379
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        client = redis.Redis.from_url(system.redis_url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("dir")["dir"] == str(tmp_path / "data" / "redis")

        # A crashed worker comes back (compose's restart policy) and consumes its queue again.
        (worker, *_pool) = system.pids("ktoforge_worker.app worker")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: "worker-cuda restarted" in system.log.read_text(), 60, "the crashed worker was not restarted")
        log = system.log.read_text()
        assert "worker-cuda exited with -9; restarting in 0.5s" in log
        new_worker = int(re.search(r"worker-cuda restarted \(pid (\d+)\)", log).group(1))
        assert new_worker != worker and new_worker in system.pids("ktoforge_worker.app worker")
        system.wait_ready(["cuda"])

        # Ctrl-C (SIGINT to the process group): everything stops, nothing is left behind.
        children = system.pids("")
        assert len(children) >= 4  # redis, api, worker (and its pool child), flower
        os.killpg(system.proc.pid, signal.SIGINT)
        assert system.proc.wait(60) == 0
        wait_for(lambda: not alive(children), 10, f"left running: {alive(children)}")
        assert "[ktoforge] stopped" in system.log.read_text()
    finally:
        if system.proc.poll() is None:
            os.killpg(system.proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_to_the_supervisor_alone_stops_every_child(tmp_path):
    """As `kill <pid>` or a service manager does: the children get no signal but the supervisor's."""
    system = start_system(tmp_path, [])
    children = system.pids("")
    try:
        assert len(children) >= 3  # redis, api, flower
        os.kill(system.proc.pid, signal.SIGTERM)
        assert system.proc.wait(60) == 0
        wait_for(lambda: not alive(children), 10, f"left running: {alive(children)}")
    finally:
        if system.proc.poll() is None:
            os.killpg(system.proc.pid, signal.SIGKILL)


def run_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "KTOFORGE_DATA_DIR": str(tmp_path / "data"), "KTOFORGE_API_PORT": str(free_port()),
            "KTOFORGE_FLOWER_PORT": str(free_port()), "KTOFORGE_LOCAL_WORKERS": '["cuda"]', **env}
    return subprocess.run([KTOFORGE, "up"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60)


def test_up_refuses_the_system_redis_port(tmp_path):
    result = run_up(tmp_path, KTOFORGE_REDIS_PORT="6379")
    assert result.returncode == 1
    assert "KTOFORGE_REDIS_PORT=6379 is the system redis-server's port" in result.stderr
    assert not (tmp_path / "data").exists()  # it refused before starting or creating anything


def test_up_with_its_redis_port_taken_says_so_and_leaves_nothing_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_up(tmp_path, KTOFORGE_REDIS_PORT=str(port))
    assert result.returncode == 1
    assert f"redis-server exited at start: is port {port} in use?" in result.stdout
    assert "[ktoforge] stopped" in result.stdout and "[ktoforge] started" not in result.stdout


def test_cli_offers_up_and_the_dataset_commands():
    from typer.testing import CliRunner

    from ktoforge.cli.main import app

    runner = CliRunner()
    up = runner.invoke(app, ["up", "--help"])
    assert up.exit_code == 0 and "Start redis-server, the API" in up.output
    dataset = runner.invoke(app, ["dataset", "--help"])
    assert dataset.exit_code == 0 and "inspect" in dataset.output


def test_banner_names_the_development_key_only_while_it_is_the_default(capsys):
    from ktoforge.local import Supervisor
    from ktoforge.settings import Settings

    Supervisor(Settings(_env_file=None, api_key="dev-api-key"))._banner()
    assert "API key  the development default 'dev-api-key': set KTOFORGE_API_KEY" in capsys.readouterr().out
    Supervisor(Settings(_env_file=None, api_key="s3cret-user-key"))._banner()
    out = capsys.readouterr().out
    assert "API key  from KTOFORGE_API_KEY" in out and "s3cret" not in out


@pytest.mark.slow
def test_workers_follow_a_moved_api_port_without_an_api_url(tmp_path, reference_dataset):
    """`KTOFORGE_API_PORT=18765 make dev`: only the port moves, and the workers still reach the API (they used
    to call :8000 and every job failed with "Connection refused")."""
    system = start_system(tmp_path, ["cuda"])
    try:
        assert "KTOFORGE_API_URL" not in system.env and system.env["KTOFORGE_API_PORT"] != "8000"
        assert not (tmp_path / ".env").exists()
        (worker, *_pool) = system.pids("ktoforge_worker.app worker")
        environ = open(f"/proc/{worker}/environ", "rb").read().split(b"\0")
        assert not [e for e in environ if e.startswith(b"KTOFORGE_API_URL=")]  # nothing tells it the URL
        hp = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128}
        with system.client() as c:
            dataset_id = upload(c, subset(reference_dataset, tmp_path / "small.jsonl", 4))
            job = c.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "cuda", "hyperparameters": hp}).json()
            done = wait_status(c, job["id"], FINISHED, timeout=300)
        assert done["status"] == "succeeded", done
    finally:
        stop_system(system)


def test_redis_server_reads_a_password_with_quotes_and_spaces_from_stdin(tmp_path):
    """Local mode's way of keeping the password off redis-server's command line, with an awkward password."""
    password = 'a "quoted" pass\\word with spaces'
    port = free_port()
    proc = subprocess.Popen(["redis-server", "-", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        proc.communicate(redis_config_line("requirepass", password).encode(), timeout=0.5)
    except subprocess.TimeoutExpired:  # it keeps running: the config was read
        pass
    try:
        client = redis.Redis(port=port, password=password)
        wait_for(lambda: _pings(client), 10, "redis-server did not accept the password")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        assert password not in open(f"/proc/{proc.pid}/cmdline").read()
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False

"""docker-compose.yml run for real (`make test-compose`): a Docker engine, the project's own compose file and
Dockerfiles on local stand-in base images, and a torch worker OUTSIDE Docker that joins the way the native Mac
worker does (the published Redis as ACL user `worker`, the published API with the worker token), trains a job
submitted over HTTP to the containerized API; Flower lists it; `down -v` leaves nothing behind.

Selected by the `compose` marker, which `make test` leaves out (it needs root or sudo for the engine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from ktoforge.local import stop_group
from tests.conftest import ROOT
from tests.system.deploy.compose_project import ComposeProject
from tests.system.deploy.docker_engine import Engine
from tests.system.deploy.standins import ensure_images
from tests.system import upload, wait_status

pytestmark = pytest.mark.compose

PROJECT = "ktoforge-composetest"
DEFAULT_SERVICES = {"redis", "api", "flower"}  # worker-cuda only with COMPOSE_PROFILES=cuda
SMALL = {"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256,
         "save_steps": 2}
ADMIN_COMMANDS = [("CONFIG", "GET", "maxmemory"), ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), ("FLUSHALL",),
                  ("FLUSHDB",), ("ACL", "LIST"), ("ACL", "SETUSER", "worker", "+@all"), ("SHUTDOWN", "NOSAVE"),
                  ("KEYS", "*"), ("SAVE",), ("BGREWRITEAOF",), ("REPLICAOF", "127.0.0.1", "1"), ("CLIENT", "KILL",
                  "ID", "1"), ("SWAPDB", "0", "1"), ("MONITOR",), ("SORT", "kf:jobs", "STORE", "kf:acl-probe")]
SUMMARY: dict[str, object] = {}


class Phases:
    """Seconds per phase, printed after the summary line: where a slow run spent its time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name], self.last = now - self.last, now

    def __str__(self) -> str:
        return ", ".join(f"{name} {s:.0f} s" for name, s in self.seconds.items())


PHASES = Phases()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    engine = Engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    PHASES.last = time.monotonic()
    engine.start()
    PHASES.done("engine")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def project(engine: Engine, tmp_path_factory: pytest.TempPathFactory):
    built = ensure_images(ROOT / "docker-compose.yml")
    PHASES.done(f"stand-in images ({len(built)} built)")
    project = ComposeProject(tmp_path_factory.mktemp("compose") / "ktoforge", PROJECT)
    project.run("down", "-v", "--remove-orphans")  # a run killed before its own cleanup
    project.init_env()
    try:
        up = project.run("up", "-d", "--build", timeout=900)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        PHASES.done("build + up")
        yield project
    finally:
        project.run("down", "-v", "--remove-orphans")


@pytest.fixture(scope="module")
def env(project: ComposeProject) -> dict[str, str]:
    from tests.system.deploy.compose_project import read_env

    return read_env(project.env_file)


def redis_as(env: dict[str, str], user: str | None, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=int(env["KTOFORGE_REDIS_PORT"]), username=user, password=password,
                       decode_responses=True, socket_timeout=10)


def test_default_services_become_healthy_and_cuda_worker_waits_for_its_profile(project: ComposeProject):
    health = project.wait_healthy()
    assert set(health) == DEFAULT_SERVICES, health
    PHASES.done("healthy")
    SUMMARY["healthy"] = len(health)


def test_no_secret_on_a_command_line_and_ports_on_loopback(project: ComposeProject, env: dict[str, str]):
    secrets = [env[k] for k in ("KTOFORGE_REDIS_PASSWORD", "KTOFORGE_REDIS_WORKER_PASSWORD", "KTOFORGE_API_KEY",
                                "KTOFORGE_WORKER_TOKEN", "KTOFORGE_FLOWER_PASSWORD")]
    for service in DEFAULT_SERVICES:
        info = project.inspect(service)
        argv = " ".join([info["Path"], *info["Args"], *(info["Config"]["Cmd"] or [])])
        assert not [s for s in secrets if s in argv], f"{service}: a secret on its command line: {argv}"
        bindings = [b for ports in info["HostConfig"]["PortBindings"].values() for b in ports]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), (service, bindings)
    running = subprocess.run(["docker", "exec", project.containers()["redis"], "cat", "/proc/1/cmdline"],
                             capture_output=True, text=True, check=True).stdout
    assert "redis-server" in running and not [s for s in secrets if s in running]


def test_worker_acl_user_gets_noperm_for_admin_commands(project: ComposeProject, env: dict[str, str]):
    worker = redis_as(env, "worker", env["KTOFORGE_REDIS_WORKER_PASSWORD"])
    for command in ADMIN_COMMANDS:
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*command)
    with pytest.raises(redis.exceptions.ResponseError, match="DEBUG command not allowed"):
        worker.execute_command("DEBUG", "SLEEP", "0")  # Redis 7 turns DEBUG off for every user, before any ACL
    assert worker.set("ktoforge:acl-probe", "1") and worker.delete("ktoforge:acl-probe") == 1
    page = ("SORT_RO", "kf:jobs", "BY", "nosort", "LIMIT", "0", "50", "GET", "kf:job:*", "DESC")  # a page of jobs
    assert isinstance(worker.execute_command(*page), list)
    admin = redis_as(env, None, env["KTOFORGE_REDIS_PASSWORD"])
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert "worker" in admin.acl_users()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_as(env, "worker", "wrong-password").ping()


def start_outside_worker(env: dict[str, str], folder: Path) -> subprocess.Popen:
    """The torch worker from .venv on CPU, joining as the native Mac worker does: published ports and .env."""
    folder.mkdir()
    joined = {
        "KTOFORGE_REDIS_URL": f"redis://worker:{env['KTOFORGE_REDIS_WORKER_PASSWORD']}@127.0.0.1:"
                              f"{env['KTOFORGE_REDIS_PORT']}/0",
        "KTOFORGE_API_URL": f"http://127.0.0.1:{env['KTOFORGE_API_PORT']}",
        "KTOFORGE_WORKER_TOKEN": env["KTOFORGE_WORKER_TOKEN"],
        "KTOFORGE_WORK_DIR": str(folder / "work"),
        "KTOFORGE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("KTOFORGE_")}
    celery = Path(sys.executable).parent / "celery"
    return subprocess.Popen([str(celery), "-A", "ktoforge_worker.app", "worker", "-Q", "cuda", "-P", "prefork",
                             "-c", "1", "--max-tasks-per-child", "1", "-n", "outside@%h", "--loglevel", "INFO"],
                            cwd=folder, env={**base, **joined, "PYTHONUNBUFFERED": "1"},
                            stdout=(folder / "worker.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def small_dataset(reference: Path, path: Path) -> Path:
    """40 desirable and 20 undesirable rows of the reference dataset: both labels, seconds to tokenize."""
    rows = [json.loads(line) for line in reference.read_text().splitlines() if line.strip()]
    picked = [r for r in rows if r["label"]][:40] + [r for r in rows if not r["label"]][:20]
    path.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return path


def flower_page(env: dict[str, str], page: str, profile: Path) -> str:
    """A Flower page as headless Chromium renders it (tables filled by its own XHR), logged in."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is needed: apt-get install chromium"
    auth = f"{env['KTOFORGE_FLOWER_USER']}:{env['KTOFORGE_FLOWER_PASSWORD']}"
    url = f"http://{auth}@127.0.0.1:{env['KTOFORGE_FLOWER_PORT']}{page}"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120).stdout


def flower_task_of(env: dict[str, str], job_id: str, profile: Path) -> str:
    """The task Flower's tasks page lists for ``job_id`` (its own page shows the args), or "" if none."""
    listed = flower_page(env, "/tasks", profile)
    for uuid in dict.fromkeys(re.findall(r'href="/task/([0-9a-f-]{36})"', listed)):
        page = flower_page(env, f"/task/{uuid}", profile)
        if job_id in page and "ktoforge.train" in page and "SUCCESS" in page:
            return uuid
    return ""


def test_outside_worker_trains_a_job_submitted_to_the_containerized_api(
        project: ComposeProject, env: dict[str, str], reference_dataset: Path, tmp_path: Path):
    project.wait_healthy()
    worker = start_outside_worker(env, tmp_path / "outside")
    api = httpx.Client(base_url=f"http://127.0.0.1:{env['KTOFORGE_API_PORT']}", timeout=60,
                       headers={"Authorization": f"Bearer {env['KTOFORGE_API_KEY']}"})
    try:
        dataset_id = upload(api, small_dataset(reference_dataset, tmp_path / "small.jsonl"))
        started = time.monotonic()
        r = api.post("/v1/jobs", json={"dataset_id": dataset_id, "backend": "cuda", "model": "builtin:tiny-mistral",
                                       "hyperparameters": SMALL})
        assert r.status_code == 201, r.text
        job = wait_status(api, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
        elapsed = time.monotonic() - started
        log = (tmp_path / "outside" / "worker.log").read_text(errors="replace")
        assert job["status"] == "succeeded", f"{job}\n{log[-4000:]}"
        listed = api.get("/v1/jobs", params={"status": "succeeded"})  # the page, read as compose's worker user
        assert listed.status_code == 200 and job["id"] in [j["id"] for j in listed.json()["items"]], listed.text
        adapter = api.get(f"/v1/jobs/{job['id']}/artifacts/adapter_model.safetensors")
        assert adapter.status_code == 200 and len(adapter.content) > 1000, adapter.status_code
        (tmp_path / "adapter_model.safetensors").write_bytes(adapter.content)
        from safetensors.torch import load_file

        assert any("lora_A" in name for name in load_file(tmp_path / "adapter_model.safetensors"))
        task = ""
        for _ in range(5):  # Flower learns of the task from the worker's events: give it a moment
            task = flower_task_of(env, job["id"], tmp_path / "chromium")
            if task:
                break
            time.sleep(3)
        assert task, "Flower's tasks page lists no succeeded ktoforge.train task for the job"
        api_log = project.run("logs", "--no-color", "api").stdout
        assert " 500 Internal Server Error" not in api_log and "Traceback" not in api_log, api_log[-6000:]
        SUMMARY.update(job=job["id"], seconds=elapsed)
        PHASES.done("job + flower")
    finally:
        api.close()
        stop_group(worker, signal.SIGTERM)


def test_down_removes_every_container_network_and_volume(project: ComposeProject, capsys: pytest.CaptureFixture):
    down = project.run("down", "-v", "--remove-orphans")
    assert down.returncode == 0, down.stderr
    assert project.leftovers() == []
    PHASES.done("down")
    assert {"healthy", "job", "seconds"} <= set(SUMMARY), f"an earlier test failed: {SUMMARY}"
    with capsys.disabled():
        print(f"\ncompose: {SUMMARY['healthy']} services healthy, job {SUMMARY['job']} succeeded in "
              f"{SUMMARY['seconds']:.0f} s")
        print(f"compose phases: {PHASES}")

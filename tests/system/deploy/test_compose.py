"""docker-compose.yml checked without an engine: the real Compose-spec schema plus our cross-references."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.system.deploy.compose_refs import problems, published_on

VALIDATOR = Path(sys.executable).parent / "check-jsonschema"


def schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VALIDATOR), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)


def broken_copy(tmp_path: Path, change) -> Path:
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("services/api", "services/worker-cuda"):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(ROOT / folder / "Dockerfile", tmp_path / folder / "Dockerfile")
    doc = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    change(doc)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(doc))
    return tmp_path / "docker-compose.yml"


def test_compose_file_is_valid():
    result = schema_check(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(ROOT / "docker-compose.yml") == []


def environment(svc: dict) -> dict[str, str | None]:
    """A service's `environment:` as a dict (list entries without `=` pass a variable through: None)."""
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return env
    return {k: (v if sep else None) for k, sep, v in (e.partition("=") for e in env)}


def test_compose_has_what_the_product_needs():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = doc["services"]
    assert set(s) == {"redis", "api", "worker-cuda", "flower"}
    redis = " ".join(s["redis"]["command"])
    assert "--appendonly yes" in redis and "requirepass $$KTOFORGE_REDIS_PASSWORD" in redis
    assert "noeviction" in redis and s["redis"]["ports"]
    gpu = s["worker-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert any(v.startswith("hf-cache:") for v in s["worker-cuda"]["volumes"])
    assert s["worker-cuda"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert environment(s["flower"])["FLOWER_BASIC_AUTH"].startswith("${KTOFORGE_FLOWER_USER:?")
    assert s["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["worker-cuda"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert "REDISCLI_AUTH" in s["redis"]["environment"] and "ping" in " ".join(s["redis"]["healthcheck"]["test"])
    assert s["worker-cuda"]["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert all(svc["restart"] == "unless-stopped" for svc in s.values())
    assert "version" not in doc and "name" not in doc  # docker-compose 1.29 rejects a top-level name
    assert all("healthcheck" in svc for svc in s.values())


def test_gpu_worker_only_in_its_profile_so_every_host_runs_the_same_lines():
    """Without COMPOSE_PROFILES=cuda (what `ktoforge init` writes on a host without an NVIDIA GPU) `up` never
    meets the nvidia device reservation, which fails where the NVIDIA runtime is missing."""
    s = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert s["worker-cuda"]["profiles"] == ["cuda"]
    assert [name for name, svc in s.items() if svc.get("profiles")] == ["worker-cuda"]
    assert environment(s["worker-cuda"])["KTOFORGE_REQUIRE_GPU"] == "true"


def test_cuda_worker_has_least_privilege():
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker-cuda"]
    assert "ipc" not in worker and worker["shm_size"]
    assert worker["cap_drop"] == ["ALL"] and "cap_add" not in worker and not worker.get("privileged")
    assert "no-new-privileges:true" in worker["security_opt"]
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "services/worker-cuda/Dockerfile").read_text(), re.M)
    assert users, "the CUDA image sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), users[-1]


def test_each_service_gets_only_its_variables_and_no_password_on_a_command_line():
    text = (ROOT / "docker-compose.yml").read_text()
    s = yaml.safe_load(text)["services"]
    assert all("env_file" not in svc for svc in s.values())
    assert "KTOFORGE_API_KEY" not in environment(s["flower"]) and "KTOFORGE_API_KEY" not in environment(s["worker-cuda"])
    assert "KTOFORGE_REDIS_PASSWORD" not in {*environment(s["api"]), *environment(s["flower"]),
                                             *environment(s["worker-cuda"])}  # the admin password: Redis only
    for name in ("api", "flower", "worker-cuda"):
        assert environment(s[name])["KTOFORGE_REDIS_URL"].startswith("redis://worker:${KTOFORGE_REDIS_WORKER_PASSWORD:?")
    redis = " ".join(s["redis"]["command"])
    assert "${" not in redis, "a compose-time ${...} in redis's command puts the value on its command line"
    assert "user worker on >$$KTOFORGE_REDIS_WORKER_PASSWORD" in redis and "-@admin -@dangerous +sort_ro\n" in redis
    api = environment(s["api"])
    assert api["KTOFORGE_API_KEY"].startswith("${KTOFORGE_API_KEY:?")
    assert api["KTOFORGE_WORKER_TOKEN"].startswith("${KTOFORGE_WORKER_TOKEN:?")
    assert environment(s["worker-cuda"])["KTOFORGE_WORKER_TOKEN"].startswith("${KTOFORGE_WORKER_TOKEN:?")


def test_every_setting_reaches_a_service_or_is_named_as_not_for_compose():
    """A setting added to .env.example must be passed to the services that read it (no blanket env_file)."""
    text = (ROOT / "docker-compose.yml").read_text()
    example = set(re.findall(r"^(KTOFORGE_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    set_by_compose = {"KTOFORGE_API_HOST", "KTOFORGE_API_URL", "KTOFORGE_REDIS_URL", "KTOFORGE_DATA_DIR",
                      "KTOFORGE_WORK_DIR", "KTOFORGE_MODEL_CACHE_DIR"}  # fixed inside the containers
    local_mode_only = {"KTOFORGE_LOCAL_WORKERS"}
    missing = sorted(v for v in example - set_by_compose - local_mode_only if v not in text)
    assert not missing, f"not passed to any compose service: {missing}"


def test_nothing_published_beyond_loopback_unless_the_publish_address_says_so():
    s = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ports = [(name, p) for name, svc in s.items() for p in svc.get("ports") or []]
    assert {name for name, _ in ports} == {"api", "redis", "flower"}
    assert all(published_on(p, {}) == "127.0.0.1" for _, p in ports)
    assert all(published_on(p, {"KTOFORGE_PUBLISH_ADDRESS": "0.0.0.0"}) == "0.0.0.0" for _, p in ports)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["services"]["api"]["depends_on"].update({"postgres": {"condition": "service_started"}}),
     "'postgres' is not a service"),
    (lambda d: d["services"]["api"]["volumes"].append("nowhere:/x"), "'nowhere' is not a declared volume"),
    (lambda d: d["services"]["api"]["build"].update({"dockerfile": "services/api/Dockerfile.gone"}),
     "does not exist"),
    (lambda d: d["services"]["flower"].update({"ports": ["5555:5555"]}), "'5555:5555' is published beyond 127.0.0.1"),
    (lambda d: d["services"]["redis"]["ports"].append("0.0.0.0:6390:6379"), "published beyond 127.0.0.1"),
])
def test_broken_references_fail(tmp_path, change, expected):
    path = broken_copy(tmp_path, change)
    assert schema_check(path).returncode == 0  # the schema alone misses these
    found = problems(path)
    assert any(expected in p for p in found), found


def test_schema_violation_fails(tmp_path):
    path = broken_copy(tmp_path, lambda d: d["services"]["api"].update({"restart": 5, "ports": "8000"}))
    result = schema_check(path)
    assert result.returncode != 0 and "restart" in (result.stdout + result.stderr)


def test_dockerfiles_use_local_mode_commands():
    api = (ROOT / "services/api/Dockerfile").read_text()
    worker = (ROOT / "services/worker-cuda/Dockerfile").read_text()
    assert "-r requirements/api.txt" in api and "ktoforge_api.main:app" in api
    cuda = (ROOT / "requirements/cuda.txt").read_text()
    assert "-r requirements/cuda.txt" in worker and "-r torch.txt" in cuda and "torch==2.13.0" in cuda
    assert re.search(r'"-Q", "cuda", "-P", "prefork", "-c", "1",\s*\\\s*"--max-tasks-per-child", "1"', worker)


def test_api_image_serves_api_and_flower_without_the_training_stack(kf_env):
    """The API image installs requirements/api.txt only: its two commands must not need torch, TRL or MLX."""
    blocked = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "mlx", "mlx_lm")
    code = (f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
            "from ktoforge_api.main import app\nimport ktoforge_worker.app\n"
            "assert '/healthz' in app.openapi()['paths']\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

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
from tests.deploy.compose_refs import problems

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


def test_compose_has_what_the_product_needs():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = doc["services"]
    assert set(s) == {"redis", "api", "worker-cuda", "flower"}
    assert "--appendonly yes" in s["redis"]["command"] and "--requirepass" in s["redis"]["command"]
    assert "noeviction" in s["redis"]["command"] and s["redis"]["ports"]
    gpu = s["worker-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert any(v.startswith("hf-cache:") for v in s["worker-cuda"]["volumes"])
    assert s["worker-cuda"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${KTOFORGE_FLOWER_USER:?")
    assert s["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["worker-cuda"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert "REDISCLI_AUTH" in s["redis"]["environment"] and "ping" in " ".join(s["redis"]["healthcheck"]["test"])
    assert s["worker-cuda"]["ulimits"] == {"memlock": -1, "stack": 67108864} and s["worker-cuda"]["ipc"] == "host"
    assert all(svc["restart"] == "unless-stopped" for svc in s.values())
    assert "version" not in doc
    assert all("healthcheck" in s[name] for name in ("redis", "api", "worker-cuda"))


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["services"]["api"]["depends_on"].update({"postgres": {"condition": "service_started"}}),
     "'postgres' is not a service"),
    (lambda d: d["services"]["api"]["volumes"].append("nowhere:/x"), "'nowhere' is not a declared volume"),
    (lambda d: d["services"]["api"]["build"].update({"dockerfile": "services/api/Dockerfile.gone"}),
     "does not exist"),
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
    assert "-r requirements/torch.txt" in worker and "torch==2.13.0" in worker
    assert re.search(r'"-Q", "cuda", "-P", "prefork", "-c", "1",\s*\\\s*"--max-tasks-per-child", "1"', worker)


def test_api_image_serves_api_and_flower_without_the_training_stack(kf_env):
    """The API image installs requirements/api.txt only: its two commands must not need torch, TRL or MLX."""
    blocked = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "mlx", "mlx_lm")
    code = (f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
            "from ktoforge_api.main import app\nimport ktoforge_worker.app\n"
            "assert '/healthz' in app.openapi()['paths']\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

"""`ktoforge init` / `make env`: a .env with fresh, consistent secrets that the services accept off loopback."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from ktoforge.envfile import render_env
from ktoforge.secret_guard import check_api, check_flower, check_worker
from ktoforge.settings import Settings
from tests.conftest import ROOT

KTOFORGE = str(Path(sys.executable).parent / "ktoforge")


def assignments(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, flags=re.M))


def init(tmp_path: Path, *args: str, path_env: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path_env or os.environ["PATH"]}
    return subprocess.run([KTOFORGE, "init", "--path", str(tmp_path / ".env"), "--example",
                           str(ROOT / ".env.example"), *args], env=env, capture_output=True, text=True, timeout=60)


def fake_nvidia_smi(folder: Path, listing: str, status: int = 0) -> str:
    """A stand-in `nvidia-smi` first on PATH (no GPU here): prints ``listing`` for `-L`."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{listing}'\nexit {status}\n")
    script.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_every_placeholder_gets_its_own_fresh_secret_and_repeats_stay_consistent():
    example = ("# KEY=change-me-in-a-comment stays\nA=change-me-a\nB=change-me-b\n"
               "URL=redis://:change-me-a@host:1/0\nPLAIN=keep\n# COMPOSE_PROFILES=\n")
    values = iter(["s1", "s2", "s3"])
    text = render_env(example, gpu=False, new_secret=lambda: next(values))
    assert text == ("# KEY=change-me-in-a-comment stays\nA=s1\nB=s2\nURL=redis://:s1@host:1/0\nPLAIN=keep\n"
                    "COMPOSE_PROFILES=\n")
    assert render_env("A=1", gpu=True).endswith("A=1\nCOMPOSE_PROFILES=cuda\n")  # no template line: appended


def test_init_writes_a_private_env_whose_secrets_the_services_accept_beyond_loopback(tmp_path):
    result = init(tmp_path, "--no-gpu")
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    values = assignments(text)
    assert not [k for k, v in values.items() if "change-me" in v]
    assert values["COMPOSE_PROFILES"] == ""
    password = values["KTOFORGE_REDIS_PASSWORD"]
    assert len(password) >= 40 and f"redis://:{password}@" in values["KTOFORGE_REDIS_URL"]
    fresh = {values[k] for k in ("KTOFORGE_API_KEY", "KTOFORGE_WORKER_TOKEN", "KTOFORGE_FLOWER_PASSWORD")}
    assert len(fresh | {password}) == 4  # each placeholder its own secret
    # Every KTOFORGE_ line of the template is kept; comments are untouched.
    template = assignments((ROOT / ".env.example").read_text())
    assert {k for k in template if k.startswith("KTOFORGE_")} <= set(values)
    # What the services will read: accepted by the same checks that refuse .env.example's values.
    settings = Settings(_env_file=env_file, api_host="0.0.0.0", redis_url=values["KTOFORGE_REDIS_URL"].replace(
        "127.0.0.1", "redis"), api_url="http://api:8000")
    check_api(settings)
    check_worker(settings)
    check_flower(settings, "0.0.0.0", [f"admin:{values['KTOFORGE_FLOWER_PASSWORD']}"], "")


def test_init_never_overwrites_without_force_and_force_gives_new_secrets(tmp_path):
    assert init(tmp_path, "--no-gpu").returncode == 0
    first = (tmp_path / ".env").read_text()
    refused = init(tmp_path, "--no-gpu")
    assert refused.returncode == 1 and "exists" in refused.stderr and "--force" in refused.stderr
    assert (tmp_path / ".env").read_text() == first
    assert init(tmp_path, "--force", "--gpu").returncode == 0
    second = assignments((tmp_path / ".env").read_text())
    assert second["KTOFORGE_API_KEY"] != assignments(first)["KTOFORGE_API_KEY"]
    assert second["COMPOSE_PROFILES"] == "cuda"
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


def test_compose_profile_follows_nvidia_smi(tmp_path):
    gpu = fake_nvidia_smi(tmp_path / "gpu", "GPU 0: NVIDIA GeForce RTX 3070 (UUID: GPU-0123)")
    assert init(tmp_path / "a", path_env=gpu).returncode == 0
    assert assignments((tmp_path / "a" / ".env").read_text())["COMPOSE_PROFILES"] == "cuda"
    broken = fake_nvidia_smi(tmp_path / "nogpu", "NVIDIA-SMI has failed: couldn't communicate with the driver", 9)
    assert init(tmp_path / "b", path_env=broken).returncode == 0
    assert assignments((tmp_path / "b" / ".env").read_text())["COMPOSE_PROFILES"] == ""


def test_make_env_needs_no_virtualenv(tmp_path):
    """A Docker host runs `make env` before any install: the script is standard library only (-I: isolated)."""
    result = subprocess.run(["python3", "-I", str(ROOT / "shared" / "ktoforge" / "envfile.py"), "--path",
                             str(tmp_path / ".env"), "--no-gpu"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    values = assignments((tmp_path / ".env").read_text())
    assert "wrote" in result.stdout and not [v for v in values.values() if "change-me" in v]

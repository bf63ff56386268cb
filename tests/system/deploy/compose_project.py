"""The repository's compose file run for real, as a throwaway project: its own copy, name, .env and ports.

The copy keeps the user's checkout (and any `.env` in it) out of the way; the project name keeps its
containers, networks and volumes apart from a `docker compose up` of the same machine, and lets the test
prove that `down -v` leaves none of them behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, free_port

# What the images need: the build contexts' files, not the checkout's venv, caches, tests or user secrets.
COPY_IGNORE = shutil.ignore_patterns(".venv", "var", ".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                     ".hypothesis", "node_modules", "tests", "bench", ".env")
KTOFORGE = Path(sys.executable).parent / "ktoforge"


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the CLI plugin is there, else docker-compose 1.29 (Debian's)."""
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True)
    return ["docker", "compose"] if v2.returncode == 0 else ["docker-compose"]


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env (comments and blank lines skipped; the last of a repeated key wins)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    return {key: value for key, value in pairs}


def set_env(path: Path, values: dict[str, str]) -> None:
    """Replace (or append) the given keys of a .env in place, leaving every other line as it was."""
    lines, done = path.read_text().splitlines(), set()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in values:
            lines[i], done = f"{key}={values[key]}", done | {key}
    lines += [f"{k}={v}" for k, v in values.items() if k not in done]
    path.write_text("\n".join(lines) + "\n")


class ComposeProject:
    """One compose project in ``folder``: a copy of the repository with a .env from `ktoforge init`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.compose = compose_command()
        shutil.copytree(ROOT, folder, ignore=COPY_IGNORE)
        self.env_file = folder / ".env"

    def init_env(self) -> dict[str, str]:
        """`ktoforge init --no-gpu` writes fresh secrets; free ports so nothing here collides; returns .env."""
        result = subprocess.run([str(KTOFORGE), "init", "--path", str(self.env_file), "--no-gpu"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        set_env(self.env_file, {"KTOFORGE_API_PORT": str(free_port()), "KTOFORGE_REDIS_PORT": str(free_port()),
                                "KTOFORGE_FLOWER_PORT": str(free_port()), "KTOFORGE_PUBLISH_ADDRESS": "127.0.0.1"})
        return read_env(self.env_file)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A compose command in the project's folder; COMPOSE_* of the caller's shell do not leak in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        return subprocess.run([*self.compose, "-p", self.name, *args], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def containers(self) -> dict[str, str]:
        """service name -> container id, from the engine's compose labels (the same for v1 and v2)."""
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.name}",
                              "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'],
                             capture_output=True, text=True, check=True).stdout
        return {svc: cid for cid, svc in (line.split() for line in out.splitlines())}

    def health(self) -> dict[str, str]:
        ids = self.containers()
        if not ids:
            return {}
        states = json.loads(subprocess.run(["docker", "inspect", *ids.values()], capture_output=True, text=True,
                                           check=True).stdout)
        by_id = {s["Id"][:12]: (s["State"].get("Health") or {}).get("Status", s["State"]["Status"]) for s in states}
        return {svc: by_id[cid[:12]] for svc, cid in ids.items()}

    def wait_healthy(self, timeout: float = 300) -> dict[str, str]:
        """Until every started service's compose healthcheck says healthy (fails fast on an exited one)."""
        deadline, health = time.time() + timeout, {}
        while time.time() < deadline:
            health = self.health()
            if health and all(s == "healthy" for s in health.values()):
                return health
            if any(s in ("exited", "dead", "unhealthy") for s in health.values()):
                break
            time.sleep(2)
        logs = self.run("logs", "--no-color", "--tail", "40").stdout
        raise AssertionError(f"services not healthy: {health}\n{logs[-6000:]}")

    def inspect(self, service: str) -> dict:
        cid = self.containers()[service]
        return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                         check=True).stdout)[0]

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes still labelled with this project (empty after `down -v`)."""
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
            out = subprocess.run(["docker", *kind, "-q", "--filter", label], capture_output=True, text=True,
                                 check=True).stdout.split()
            found += [f"{kind[0]} {x}" for x in out]
        return found

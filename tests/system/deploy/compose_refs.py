"""Cross-reference checks the Compose JSON schema cannot make: every name used is defined, every file exists.

Run as `python -m tests.system.deploy.compose_refs docker-compose.yml`; exits 1 listing each broken reference.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# A published port must name its host address through this variable (default loopback): nothing is open to
# the LAN unless the operator sets KTOFORGE_PUBLISH_ADDRESS (Docker's published ports bypass host firewalls).
PUBLISH = "${KTOFORGE_PUBLISH_ADDRESS:-127.0.0.1}"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (enough to read a port line as compose does)."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        return env.get(name) or (arg if op == ":-" else "")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, text)


def published_on(port: str | int | dict, env: dict[str, str]) -> str:
    """The host address a `ports:` entry binds to under ``env``; "" is every interface (Docker's default)."""
    if isinstance(port, dict):
        return interpolate(str(port.get("host_ip", "")), env)
    parts = interpolate(str(port), env).rsplit(":", 2)
    return parts[0] if len(parts) == 3 else ""


def exposure(services: dict) -> list[str]:
    """Ports published beyond 127.0.0.1 other than through KTOFORGE_PUBLISH_ADDRESS (loopback by default)."""
    found = []
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            lan = published_on(port, {"KTOFORGE_PUBLISH_ADDRESS": "0.0.0.0"})
            if published_on(port, {}) != "127.0.0.1" or lan not in ("127.0.0.1", "0.0.0.0"):
                found.append(f"services.{name}.ports: '{port}' is published beyond 127.0.0.1 (use {PUBLISH})")
    return found


def problems(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    root = path.parent
    services = doc.get("services") or {}
    volumes, networks = set(doc.get("volumes") or {}), set(doc.get("networks") or {}) | {"default"}
    found = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                found.append(f"services.{name}.depends_on: '{dep}' is not a service")
            elif isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy" \
                    and "healthcheck" not in services[dep]:
                found.append(f"services.{name}.depends_on: '{dep}' has no healthcheck to be healthy")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                found.append(f"services.{name}.volumes: '{source}' is not a declared volume")
        nets = svc.get("networks") or []
        for net in nets if isinstance(nets, list) else nets.keys():
            if net not in networks:
                found.append(f"services.{name}.networks: '{net}' is not a declared network")
        build = svc.get("build")
        if build:
            context = root / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            if not dockerfile.is_file():
                found.append(f"services.{name}.build: {dockerfile.relative_to(root)} does not exist")
        env_files = svc.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            name_ = env_file if isinstance(env_file, str) else env_file["path"]
            if name_ == ".env":
                name_ = ".env.example"  # .env is the user's copy of it
            if not (root / name_).is_file():
                found.append(f"services.{name}.env_file: {name_} does not exist")
    return found + exposure(services)


if __name__ == "__main__":
    errors = problems(Path(sys.argv[1]))
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)

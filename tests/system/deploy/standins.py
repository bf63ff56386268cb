"""Local stand-ins for the base images docker-compose.yml names, so the project's own files build unchanged.

No container registry is reachable here, so `python:3.11-slim`, `redis:7.2-alpine` (and whatever else a
started service names) are built from a Debian bookworm root made by debootstrap and `docker import`, then
tagged with those exact names. The stand-ins reach Debian's mirror and PyPI the way this host does: its apt
sources, the network part of its pip configuration and its extra CA certificates (a TLS-intercepting proxy)
are read at run time and baked in. No mirror or index host name is written in this repository.

Run as `python -m tests.system.deploy.standins docker-compose.yml` to build them outside the test.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

BASE = "ktoforge-standin/debian:bookworm"
SUITE = "bookworm"
CA_DIR = Path("/usr/local/share/ca-certificates")
LABEL = "org.ktoforge.standin-inputs"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle, rebuilt by update-ca-certificates
# The pip options that decide how PyPI is reached; host file paths (constraints, find-links) stay on the host.
PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "default-timeout", "retries")
PIP_CONFIG_FILES = (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config/pip/pip.conf")

# Each stand-in: what the real image offers that our Dockerfiles and compose commands use.
PYTHON_311 = f"""FROM {BASE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv passwd \\
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /usr/local/python && /usr/local/python/bin/python -V
COPY pip.conf /etc/pip.conf
ENV PATH=/usr/local/python/bin:$PATH LANG=C.UTF-8
CMD ["python"]
"""
REDIS_7 = f"""FROM {BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
"""
RECIPES = {"python:3.11-slim": PYTHON_311, "redis:7.2-alpine": REDIS_7}


def _sources_entries(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of each enabled entry of one apt sources file, one-line or deb822 style."""
    text = path.read_text()
    if path.suffix == ".list":
        found = []
        for line in text.splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(parts) >= 3 and parts[0] == "deb":
                found.append((parts[1], [parts[2]], parts[3:]))
        return found
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
            for uri in fields.get("URIs", "").split():
                found.append((uri, fields.get("Suites", "").split(), fields.get("Components", "").split()))
    return found


def host_apt_sources() -> list[str]:
    """The host's Debian bookworm entries as one-line `deb` lines (security and updates included)."""
    files = [Path("/etc/apt/sources.list")]
    folder = Path("/etc/apt/sources.list.d")
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources"))
    lines = []
    for path in files:
        if not path.is_file():
            continue
        for uri, suites, components in _sources_entries(path):
            for suite in suites:
                if suite == SUITE or suite.startswith(SUITE + "-"):
                    lines.append(f"deb {uri} {suite} {' '.join(components or ['main'])}")
    if not any(f" {SUITE} " in line for line in lines):
        raise RuntimeError(f"no Debian {SUITE} entry in this host's apt sources to build the stand-ins from")
    return lines


def host_mirror() -> str:
    """The mirror debootstrap fetches from: the host's own entry for the plain suite."""
    return next(line.split()[1] for line in host_apt_sources() if line.split()[2] == SUITE)


def host_pip_conf() -> str:
    """A pip.conf for the stand-in: the host's network options (files, then PIP_* env), our CA bundle."""
    parser = configparser.ConfigParser()
    for path in PIP_CONFIG_FILES:
        if path.is_file():
            parser.read(path)
    options = {}
    for section in ("global", "install"):
        if parser.has_section(section):
            options.update({k: v for k, v in parser.items(section) if k in PIP_NETWORK_KEYS})
    for key in PIP_NETWORK_KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            options[key] = value
    for key in ("index-url", "extra-index-url"):  # an index in a host folder (file://) is not reachable inside
        if key in options:
            options[key] = " ".join(u for u in options[key].split() if not u.startswith(("file:", "/")))
            if not options[key]:
                del options[key]
    if "proxy" not in options and os.environ.get("https_proxy"):
        options["proxy"] = os.environ["https_proxy"]
    options["cert"] = CA_BUNDLE
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())


def run(cmd: list[str], **kwargs) -> None:
    """A build step; on failure the error names the command and ends with its output's tail."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")


def inputs_digest() -> str:
    """What the stand-ins bake in from this host (and their recipes): a change rebuilds them, else they are reused."""
    digest = hashlib.sha256("\n".join([*host_apt_sources(), host_pip_conf(), *RECIPES.values()]).encode())
    for cert in sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []:
        digest.update(cert.read_bytes())
    return digest.hexdigest()[:16]


def image_exists(name: str) -> bool:
    """The image is there and was built from this host's current inputs (its LABEL says which)."""
    found = subprocess.run(["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}',
                            name], capture_output=True, text=True)
    return found.returncode == 0 and found.stdout.strip() == inputs_digest()


def build_base(work: Path) -> None:
    """debootstrap a minimal bookworm, trusting the host's extra CAs and using its apt sources; import it."""
    root = work / "rootfs"
    sudo = [] if os.geteuid() == 0 else ["sudo"]  # the root file system is root's: write into it as root

    def put(path: str, text: str) -> None:
        run([*sudo, "tee", str(root / path)], input=text)

    run([*sudo, "debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(root), host_mirror()])
    try:
        put("etc/apt/sources.list", "\n".join(host_apt_sources()) + "\n")
        run([*sudo, "find", str(root / "etc/apt/sources.list.d"), "-mindepth", "1", "-delete"])
        certs = sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []
        if certs:
            run([*sudo, "cp", *map(str, certs), str(root / CA_DIR.relative_to("/"))])
        run([*sudo, "chroot", str(root), "update-ca-certificates"])
        # Package scripts must not start daemons inside a build (no init there), as in Docker's own images.
        put("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        run([*sudo, "chmod", "755", str(root / "usr/sbin/policy-rc.d")])
        run([*sudo, "rm", "-rf", str(root / "var/cache/apt/archives"), str(root / "var/lib/apt/lists")])
        tar = subprocess.Popen([*sudo, "tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "--change", 'CMD ["bash"]', "--change",
                                   f"LABEL {LABEL}={inputs_digest()}", "-", BASE], stdin=tar.stdout,
                                  capture_output=True, text=True)
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"importing the debootstrap root as {BASE} failed: {imported.stderr[-2000:]}")
    finally:
        run([*sudo, "rm", "-rf", "--one-file-system", str(root)])


def build_standin(name: str, work: Path) -> None:
    context = work / re.sub(r"[^a-z0-9]+", "-", name)
    context.mkdir()
    (context / "Dockerfile").write_text(RECIPES[name])
    (context / "pip.conf").write_text(host_pip_conf())
    run(["docker", "build", "-q", "--label", f"{LABEL}={inputs_digest()}", "-t", name, str(context)])


def images_needed(compose_file: Path) -> set[str]:
    """Images the default services use: each `image:` and each FROM of a Dockerfile they build."""
    doc = yaml.safe_load(compose_file.read_text())
    needed = set()
    for svc in doc["services"].values():
        if svc.get("profiles"):
            continue  # not started without its profile (the CUDA worker)
        build = svc.get("build")
        if build:
            context = compose_file.parent / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            needed |= set(re.findall(r"^FROM\s+(?:--\S+\s+)*(\S+)", dockerfile.read_text(), re.M))
        elif svc.get("image"):
            needed.add(svc["image"])
    return needed


def ensure_images(compose_file: Path) -> list[str]:
    """Build what is missing (the base first); returns the names built this time (empty: all cached)."""
    needed = images_needed(compose_file)
    unknown = needed - set(RECIPES)
    if unknown:
        raise RuntimeError(f"no stand-in recipe for {sorted(unknown)}: add one to {__name__}.RECIPES")
    missing = sorted(name for name in needed if not image_exists(name))
    if not missing:
        return []
    with tempfile.TemporaryDirectory(prefix="ktoforge-standins-") as tmp:
        built = []
        if not image_exists(BASE):
            build_base(Path(tmp))
            built.append(BASE)
        for name in missing:
            build_standin(name, Path(tmp))
            built.append(name)
    return built


if __name__ == "__main__":
    print("built:", ensure_images(Path(sys.argv[1])) or "nothing (all present)")

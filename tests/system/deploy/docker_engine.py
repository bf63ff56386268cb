"""A Docker engine for the real compose test: installed where missing, started by hand where none answers.

CI machines have no systemd, so when no daemon answers we start `dockerd` ourselves and remember its pid:
at the end we stop exactly that process (and nothing that was already running), also when the test failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGES = {"docker": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


def ensure_installed() -> None:
    """apt-get the engine, Compose 1.29 and debootstrap when a command is missing (a fresh CI machine)."""
    missing = [pkg for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*_sudo(), "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*_sudo(), "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def answers() -> bool:
    """True when a daemon answers the docker client on its default socket."""
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


class Engine:
    """The daemon the test uses; ``started_pid`` is set only when this object started it."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.started_pid: int | None = None

    def start(self, timeout: float = 90) -> None:
        ensure_installed()
        if answers():
            return
        proc = subprocess.Popen([*_sudo(), "dockerd"], stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.started_pid = proc.pid
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if answers():
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"dockerd did not answer in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the dockerd we started (it stops its containerd and containers), SIGKILL if it hangs."""
        if self.started_pid is None:
            return
        pid, self.started_pid = self.started_pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

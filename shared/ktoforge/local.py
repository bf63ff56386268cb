"""Local mode: the compose services as supervised processes (redis-server, API, workers, Flower).

What compose does for containers, this does for processes: start in dependency order, restart a child
that crashes (with backoff), and stop everything on Ctrl-C, SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ktoforge.settings import Settings, get_settings

BIN = Path(sys.executable).parent


@dataclass
class Service:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = field(default=0.0)


def redis_url(settings: Settings) -> str:
    password = settings.redis_password.get_secret_value()
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{settings.redis_port}/0"


def mlx_importable() -> bool:
    """Probed in a child: the supervisor itself never imports mlx."""
    return subprocess.run([sys.executable, "-c", "import mlx.core"], capture_output=True).returncode == 0


def services(settings: Settings) -> list[Service]:
    data = Path(settings.data_dir).resolve()
    (data / "redis").mkdir(parents=True, exist_ok=True)
    password = settings.redis_password.get_secret_value()
    redis_argv = ["redis-server", "--port", str(settings.redis_port), "--bind", "127.0.0.1",
                  "--dir", str(data / "redis"), "--appendonly", "yes", "--maxmemory-policy", "noeviction"]
    if password:
        redis_argv += ["--requirepass", password]
    celery = str(BIN / "celery")
    out = [
        Service("redis", redis_argv),
        Service("api", [sys.executable, "-m", "uvicorn", "ktoforge_api.main:app", "--host", settings.api_host,
                        "--port", str(settings.api_port)]),
    ]
    if "cuda" in settings.local_workers:
        out.append(Service("worker-cuda", [celery, "-A", "ktoforge_worker.app", "worker", "-Q", "cuda", "-P",
                                           "prefork", "-c", "1", "--max-tasks-per-child", "1", "-n", "cuda@%h",
                                           "--loglevel", "INFO"]))
    if "mlx" in settings.local_workers and mlx_importable():
        out.append(Service("worker-mlx", [celery, "-A", "ktoforge_mlx.app", "worker", "-Q", "mlx", "-P", "solo",
                                          "-n", "mlx@%h", "--loglevel", "INFO"]))
    out.append(Service("flower", [celery, "-A", "ktoforge_worker.app", "flower", f"--port={settings.flower_port}",
                                  "--address=127.0.0.1",
                                  f"--basic-auth={settings.flower_user}:{settings.flower_password.get_secret_value()}"]))
    return out


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = {**os.environ, "KTOFORGE_REDIS_URL": redis_url(settings)}
        self.services = services(settings)
        self.stopping = False

    def start(self, service: Service) -> None:
        service.proc = subprocess.Popen(service.argv, env=self.env)
        service.started = time.time()

    def wait_redis(self) -> None:
        client = redis.Redis.from_url(self.env["KTOFORGE_REDIS_URL"])
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.settings.redis_port}")

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        for service in self.services:
            self.start(service)
            if service.name == "redis":
                self.wait_redis()
        self._banner()
        try:
            while not self.stopping:
                self._restart_crashed()
                time.sleep(0.5)
        finally:
            self.stop()

    def _restart_crashed(self) -> None:
        """Like compose's restart policy: a crashed child comes back, waiting longer after each crash."""
        now = time.time()
        for s in self.services:
            if s.proc is None or s.proc.poll() is None:
                continue
            if s.next_start == 0.0:
                if now - s.started > 60:
                    s.restarts = 0  # it ran a good while: the crash is not a loop
                delay = min(30.0, 0.5 * 2**s.restarts)
                print(f"[ktoforge] {s.name} exited with {s.proc.returncode}; restarting in {delay:.1f}s", flush=True)
                s.next_start = now + delay
            elif now >= s.next_start:
                s.restarts += 1
                s.next_start = 0.0
                self.start(s)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def stop(self) -> None:
        """Workers and API first (so they finish their step against a live Redis), Redis last."""
        self.stopping = True
        for s in reversed(self.services):
            if s.proc and s.proc.poll() is None:
                s.proc.terminate()
        for s in reversed(self.services):
            if s.proc:
                try:
                    s.proc.wait(20)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()
        print("[ktoforge] stopped", flush=True)

    def _banner(self) -> None:
        st = self.settings
        names = ", ".join(s.name for s in self.services)
        print(f"[ktoforge] started {names}\n"
              f"  API      http://{st.api_host}:{st.api_port}  (docs: http://{st.api_host}:{st.api_port}/docs)\n"
              f"  Flower   http://127.0.0.1:{st.flower_port}  (user {st.flower_user})\n"
              f"  Redis    redis://127.0.0.1:{st.redis_port}/0\n"
              "  Ctrl-C stops everything.", flush=True)


def up() -> None:
    Supervisor(get_settings()).run()

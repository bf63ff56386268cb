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
SYSTEM_REDIS_PORT = 6379  # the machine's own redis-server: local mode never shares its data
STOP_TIMEOUT_S = 20.0  # a child gets this long to exit after SIGTERM before it is killed


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # variables for this child only (secrets stay off argv)
    stdin: str | None = None  # written to the child's stdin at each start (redis-server's secret config lines)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0


def redis_url(settings: Settings) -> str:
    password = settings.redis_password.get_secret_value()
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{settings.redis_port}/0"


def redis_config_line(name: str, value: str) -> str:
    """A redis.conf line with ``value`` double-quoted, escaped as redis-server's config parser reads it."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'{name} "{quoted}"\n'


def mlx_importable() -> bool:
    """Probed in a child: the supervisor itself never imports mlx."""
    return subprocess.run([sys.executable, "-c", "import mlx.core"], capture_output=True).returncode == 0


def services(settings: Settings) -> list[Service]:
    """The same services and start commands as docker-compose.yml, in dependency order."""
    data = Path(settings.data_dir).resolve()
    (data / "redis").mkdir(parents=True, exist_ok=True)
    password = settings.redis_password.get_secret_value()
    # `redis-server -` reads config lines from stdin first: the password never shows on its command line (ps).
    redis_argv = ["redis-server", "-", "--port", str(settings.redis_port), "--bind", "127.0.0.1",
                  "--dir", str(data / "redis"), "--appendonly", "yes", "--maxmemory-policy", "noeviction"]
    redis_config = redis_config_line("requirepass", password) if password else ""
    celery = str(BIN / "celery")
    out = [
        Service("redis", redis_argv, stdin=redis_config),
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
    basic_auth = f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
    out.append(Service("flower", [celery, "-A", "ktoforge_worker.app", "flower", f"--port={settings.flower_port}",
                                  "--address=127.0.0.1"], env={"FLOWER_BASIC_AUTH": basic_auth}))
    return out


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        if settings.redis_port == SYSTEM_REDIS_PORT:
            raise SystemExit(f"[ktoforge] KTOFORGE_REDIS_PORT={SYSTEM_REDIS_PORT} is the system redis-server's "
                             "port; local mode runs its own redis-server (default 6390): choose another port")
        self.settings = settings
        self.env = {**os.environ, "KTOFORGE_REDIS_URL": redis_url(settings)}
        self.services = services(settings)
        self.stopping = False

    def start(self, service: Service) -> None:
        piped = service.stdin is not None
        service.proc = subprocess.Popen(service.argv, env={**self.env, **service.env},
                                        stdin=subprocess.PIPE if piped else None)
        if piped and service.proc.stdin is not None:
            try:
                with service.proc.stdin:  # EOF ends redis-server's config
                    service.proc.stdin.write(service.stdin.encode())
            except BrokenPipeError:  # it died at once: the restart loop reports its exit status
                pass
        service.started = time.time()

    def wait_redis(self, service: Service) -> None:
        client = redis.Redis.from_url(self.env["KTOFORGE_REDIS_URL"], socket_timeout=1)
        deadline = time.time() + 10
        while time.time() < deadline and not self.stopping:
            if service.proc is None or service.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: is port {self.settings.redis_port} in use?")
            try:
                client.ping()
                return
            except redis.RedisError:  # not up yet, or another server holds the port (then ours exits)
                time.sleep(0.05)
        if not self.stopping:
            raise RuntimeError(f"redis-server did not answer on port {self.settings.redis_port}")

    def run(self) -> int:
        """Start everything, supervise until a signal, stop everything; the exit status for the CLI."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            for service in self.services:
                if self.stopping:
                    break
                self.start(service)
                if service.name == "redis":
                    self.wait_redis(service)
            if not self.stopping:
                self._banner()
            while not self.stopping:
                self._restart_crashed()
                time.sleep(0.5)
        except RuntimeError as exc:
            print(f"[ktoforge] {exc}", flush=True)
            return 1
        finally:
            self.stop()
        return 0

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
                print(f"[ktoforge] {s.name} restarted (pid {s.proc.pid})", flush=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def stop(self) -> None:
        """API and workers first, Redis last, so that their final writes (a job's state) still reach Redis."""
        self.stopping = True
        others = [s for s in self.services if s.name != "redis"]
        self._terminate(others)
        self._terminate([s for s in self.services if s.name == "redis"])
        print("[ktoforge] stopped", flush=True)

    @staticmethod
    def _terminate(group: list[Service]) -> None:
        """SIGTERM (compose's stop signal) to each, then wait; whatever outlives STOP_TIMEOUT_S is killed."""
        running = [s.proc for s in group if s.proc and s.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.time() + STOP_TIMEOUT_S
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _banner(self) -> None:
        st = self.settings
        names = ", ".join(s.name for s in self.services)
        default_key = Settings.model_fields["api_key"].default.get_secret_value()
        key = (f"the development default '{default_key}': set KTOFORGE_API_KEY (.env) before opening it to a network"
               if st.api_key.get_secret_value() == default_key else "from KTOFORGE_API_KEY")
        print(f"[ktoforge] started {names}\n"
              f"  API      http://{st.api_host}:{st.api_port}  (docs: http://{st.api_host}:{st.api_port}/docs)\n"
              f"  API key  {key}\n"
              f"  Flower   http://127.0.0.1:{st.flower_port}  (user {st.flower_user})\n"
              f"  Redis    redis://127.0.0.1:{st.redis_port}/0\n"
              "  Ctrl-C stops everything.", flush=True)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60.0) -> None:
    """Stop a process started with ``start_new_session=True`` and all it started: ``sig`` to its group (SIGINT:
    local mode's own ordered stop), SIGKILL to the group if it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def up() -> int:
    return Supervisor(get_settings()).run()

"""A command in a real pseudo-terminal (stdlib ``pty``): what a user's terminal gives the CLI.

The child is a session leader whose controlling terminal is the pty, so rich sees a terminal (live bar)
and writing ``\\x03`` to the master is a real Ctrl-C: the line discipline sends SIGINT to the foreground
process group, exactly as when a user presses it. SIGINT and SIGQUIT start at their defaults in the child, as
in a shell's foreground job: a test run started in the background by a non-interactive shell (`make test &`)
ignores both, Python keeps an ignored SIGINT ignored, and Ctrl-C would then never reach the CLI.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None,
                 rows: int = 40, cols: int = 160) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once (nothing of the test process runs here)
            for sig in (signal.SIGINT, signal.SIGQUIT):  # a terminal's foreground job: not what the tests inherit
                signal.signal(sig, signal.SIG_DFL)
            if cwd:
                os.chdir(cwd)
            os.execve(argv[0], argv, {**env, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)})
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        """Everything printed so far, with the terminal's control sequences removed."""
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the child closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError as exc:  # EIO: every holder of the slave side is gone
            if exc.errno != errno.EIO:
                raise
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if not self._read(0.2):
                break
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.text[-3000:]}")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 300) -> int:
        """The exit code (128 + n for a signal), reading all output; kills the child if it outlives ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            alive = self._read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.1):
                    pass
                self.status = os.waitstatus_to_exitcode(status)
            elif not alive:
                time.sleep(0.05)
        if self.status is None:
            self.close()
            raise AssertionError(f"still running after {timeout} s; output:\n{self.text[-3000:]}")
        os.close(self.fd)
        return self.status if self.status >= 0 else 128 - self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.status = -9
            os.close(self.fd)

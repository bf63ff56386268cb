"""A TCP proxy that a test can cut: every open connection is closed at once, new ones still pass.

This is what a flaky network or a restarting load balancer does to a long SSE response.
"""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, upstream]
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        """Close every open connection (both sides); how many sockets there were."""
        with self.lock:
            victims, self.open = self.open, []
        for s in victims:
            try:  # shutdown wakes the pipe threads blocked in recv; close alone would not
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        return len(victims)

    def close(self) -> None:
        self.server.close()
        self.cut()

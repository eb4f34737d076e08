"""A loopback TCP relay that can partition one node from PostgreSQL.

A node connected through the relay sees its database sessions stall without closing when the
relay is cut: bytes it sends are held, nothing comes back, exactly what a network partition
looks like from both ends. Healing forwards what was held. Threads, not asyncio: the relay
must keep its own pace whatever the test's event loop is doing.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class Partition:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @classmethod
    def for_dsn(cls, dsn: str) -> tuple[Partition, str]:
        """A relay in front of ``dsn``'s server and the DSN that goes through it."""
        parts = urlsplit(dsn)
        relay = cls(parts.hostname or "127.0.0.1", parts.port or 5432)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return relay, urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{relay.port}"))

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        for sock in [self._listener, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            self._open.wait()  # a partitioned node cannot open sessions either
            try:
                up = socket.create_connection(self.target)
            except OSError:
                down.close()
                continue
            self._sockets += [down, up]
            for src, dst in ((down, up), (up, down)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._open.wait()
                data = src.recv(65536)
                self._open.wait()  # bytes read just before the cut are held until the heal
                if not data or self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

"""A database host that can fall silent, as a network cut makes it: a TCP forwarder on 127.0.0.1 in front of
the tests' PostgreSQL (its unix socket). While it answers, it carries bytes both ways. Once ``silent()``, it
carries nothing and refuses nothing: every connection stays open, the bytes sent to it are taken and held
(the peer's kernel acknowledges them, as a stuck network path or proxy would leave them), and new
connections are accepted and never answered; nothing is reset or closed. Once ``answering()`` again, the
held bytes go on, as they would once a cut network heals, and every connection works as before."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import threading
import urllib.parse

from psycopg import conninfo


def _upstream(location: str) -> str:
    """The unix socket of the PostgreSQL server of ``location`` (its ``host`` is the socket's directory)."""
    directory = conninfo.conninfo_to_dict(location)["host"]
    port = conninfo.conninfo_to_dict(location).get("port", "5432")
    path = os.path.join(directory, f".s.PGSQL.{port}")
    if not os.path.exists(path):
        raise AssertionError(f"no PostgreSQL socket at {path}: {glob.glob(os.path.join(directory, '.s.PGSQL.*'))}")
    return path


class SilentHost:
    """The forwarder; ``location`` is the store location to reach the database through it."""

    def __init__(self, location: str):
        self._upstream = _upstream(location)
        self._answering = threading.Event()
        self._answering.set()
        self._stopped = False
        self._sockets: list[socket.socket] = []
        self._guard = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        params = conninfo.conninfo_to_dict(location)
        database = params.pop("dbname")
        params.update(host="127.0.0.1", port=str(port))
        self.location = f"postgresql:///{database}?{urllib.parse.urlencode(params)}"
        threading.Thread(target=self._accepting, name="silent-host", daemon=True).start()

    def silent(self) -> None:
        self._answering.clear()

    def answering(self) -> None:
        self._answering.set()

    def close(self) -> None:
        self._stopped = True
        self._answering.set()
        self._listener.close()
        with self._guard:
            for sock in self._sockets:
                sock.close()

    def __enter__(self) -> "SilentHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._guard:
            self._sockets.append(sock)
        return sock

    def _accepting(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(self._keep(client),), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        self._answering.wait()  # a connection accepted while silent is answered once the host answers again
        if self._stopped:
            return
        server = self._keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        try:
            server.connect(self._upstream)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._carry, args=(server, client), daemon=True).start()
        self._carry(client, server)

    def _carry(self, source: socket.socket, target: socket.socket) -> None:
        """Bytes from ``source`` to ``target``, held while the host is silent; an end passed on as an end, and so
        is a reset (the server's end of a unix socket closed with bytes unread resets it)."""
        try:
            while data := source.recv(65536):
                self._answering.wait()
                if self._stopped:
                    return
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

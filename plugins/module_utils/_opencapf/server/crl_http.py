# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRL over plain HTTP: ``GET /capf.crl`` answers the newest CRL in the store (DER,
``application/pkix-crl``), as RFC 5280 4.2.1.13 expects of an http CRL distribution point.

A deliberately small HTTP/1.1 responder (one request per connection, ``Connection: close``): it
reads a request line and headers within a size and time bound, and answers GET and HEAD of one
path. The CRL is read from the store for each request, so every node of a cluster serves the same bytes.
"""

from __future__ import annotations

import asyncio
import logging

from ..ca.crl import CRL_PATH, MEDIA_TYPE
from ..store import crls as crl_records

log = logging.getLogger("opencapf.server")
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class CrlResponder:
    """Answers CRL requests; ``read_crl()`` (run through ``run``, the service's store thread pool)
    returns the newest CRL's DER or None."""

    def __init__(self, store, run):
        self._store = store
        self._run = run
        self._servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []

    def _read_crl(self) -> bytes | None:
        with self._store.read() as tx:
            row = crl_records.latest(tx)
        return None if row is None else row["der"]

    async def start(self, address: str, port: int) -> list[tuple[str, int]]:
        server = await asyncio.start_server(self._handle, host=address, port=port, reuse_address=True,
                                            limit=MAX_REQUEST_BYTES)
        self._servers.append(server)
        self.bound = [tuple(sock.getsockname()[:2]) for sock in server.sockets]
        for host, bound_port in self.bound:
            log.info("CRL responder listening on http://%s:%d%s", host, bound_port, CRL_PATH)
        return self.bound

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            status, body, method = await self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            status, body, method = 400, b"", "GET"
        except Exception:  # pylint: disable=broad-except  # a defect of ours or a store away: answer 503, keep serving
            log.exception("CRL responder: internal error")
            status, body, method = 503, b"", "GET"
        headers = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Length: {len(body)}", "Connection: close"]
        if status == 200:
            headers += [f"Content-Type: {MEDIA_TYPE}", "Cache-Control: max-age=60"]
        elif status == 405:
            headers.append("Allow: GET, HEAD")
        try:
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_SECONDS)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        if len(head) > MAX_REQUEST_BYTES:
            return 400, b"", "GET"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"", "GET"
        method, target = parts[0].decode("ascii", "replace"), parts[1].split(b"?", 1)[0]
        if target != CRL_PATH.encode("ascii"):
            return 404, b"", method
        if method not in ("GET", "HEAD"):
            return 405, b"", method
        der = await self._run(self._read_crl)
        return (503, b"", method) if der is None else (200, der, method)


__all__ = ["CrlResponder"]

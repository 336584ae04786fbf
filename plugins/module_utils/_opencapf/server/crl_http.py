# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRLs over plain HTTP (DER, ``application/pkix-crl``), as RFC 5280 4.2.1.13 expects of an
http CRL distribution point: ``GET /capf.crl`` answers the newest CRL of the active CAPF certificate,
``GET /capf-<first 16 hex digits of a CAPF certificate's fingerprint>.crl`` the newest of that one
(``ca/crl.issuer_location``; the location its LSCs name, which stays after a rotation).

A deliberately small HTTP/1.1 responder (one request per connection, ``Connection: close``): it
reads a request line and headers within a size and time bound, and answers GET and HEAD of those
paths. The CRLs are read from the store for each request, so every node of a cluster serves the same bytes.
Only current CRLs are served (``revocation.served_crls``): the location of a retired CAPF certificate
that has expired answers 404, and a CRL past its nextUpdate is not answered (503 at ``/capf.crl``, 404
at its own location), each logged once.
"""

from __future__ import annotations

import asyncio
import logging
import re

from .. import revocation
from ..ca.crl import CRL_PATH, ISSUER_ID_DIGITS, MEDIA_TYPE, issuer_location
from ..store import crls as crl_records
from ..vocabulary import utc_now

log = logging.getLogger("opencapf.server")
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 10.0
_ISSUER_PATH = re.compile(re.escape(CRL_PATH[:-4]).encode("ascii") + b"-[0-9a-f]{%d}\\.crl" % ISSUER_ID_DIGITS)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class CrlResponder:
    """Answers CRL requests; ``read_crl()`` (run through ``run``, the service's store thread pool)
    returns the newest CRL's DER or None."""

    def __init__(self, store, run, clock=utc_now):
        self._store = store
        self._run = run
        self._clock = clock  # the time a CRL must be current at (tests travel in time with it)
        self._told: set[tuple[int, str]] = set()  # (CRL number, why withheld) logged by this responder
        self._servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []

    def _read_crl(self, target: bytes) -> bytes | None:
        """The DER of the CRL served at ``target``; None when the CAPF certificate it names has no current one."""
        with self._store.read() as tx:
            served, withheld = revocation.served_crls(tx, self._clock())
            row = self._at(target, served)
            if row is None:
                withheld_row = self._at(target, {fingerprint: row for fingerprint, (row, _reason) in withheld.items()})
                if withheld_row is not None:
                    self._tell(withheld_row, withheld[withheld_row["signer_fingerprint"]][1])
                return None
            return crl_records.der(tx, row["number"])

    @staticmethod
    def _at(target: bytes, rows: dict[str, dict]) -> dict | None:
        if target == CRL_PATH.encode("ascii"):
            return next((row for row in rows.values() if row["active"]), None)
        return next((row for fingerprint, row in rows.items()
                     if issuer_location(CRL_PATH, fingerprint).encode("ascii") == target), None)

    def _tell(self, row: dict, reason: str) -> None:
        if (row["number"], reason) not in self._told:
            self._told.add((row["number"], reason))
            log.log(logging.WARNING if row["kept"] else logging.INFO, "CRL responder: %s", reason)

    async def start(self, address: str, port: int) -> list[tuple[str, int]]:
        server = await asyncio.start_server(self._handle, host=address, port=port, reuse_address=True,
                                            limit=MAX_REQUEST_BYTES)
        self._servers.append(server)
        self.bound = [tuple(sock.getsockname()[:2]) for sock in server.sockets]
        for host, bound_port in self.bound:
            log.info("CRL responder listening on http://%s:%d%s (and a CRL per CAPF certificate beside it)", host,
                     bound_port, CRL_PATH)
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
        if target != CRL_PATH.encode("ascii") and not _ISSUER_PATH.fullmatch(target):
            return 404, b"", method
        if method not in ("GET", "HEAD"):
            return 405, b"", method
        der = await self._run(self._read_crl, target)
        if der is None:
            return (503 if target == CRL_PATH.encode("ascii") else 404), b"", method
        return 200, der, method


__all__ = ["CrlResponder"]

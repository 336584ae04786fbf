"""The CAPF CRLs as a test takes them: the service's HTTP CRL responder on a loopback port, with its own
event loop and store thread, as the service runs it; and the active CAPF certificate's current CRL, as
``opencapf crl show`` takes it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import urllib.error
import urllib.request

from _opencapf import revocation
from _opencapf.server.crl_http import CrlResponder


def active_crl(store, now=None):
    """The active CAPF certificate's CRL (with ``der``) when it is current at ``now`` (default: the
    host's clock; ``revocation.current_crls``), else None."""
    return next((row for row in revocation.current_crls(store, now) if row["active"]), None)


class CrlHttp:
    """A running ``CrlResponder`` of ``store`` (``clock``: the time a CRL must be current at, default the
    host's); ``close()`` stops it."""

    def __init__(self, store, clock=None):
        self._loop = asyncio.new_event_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def run(function, *args):
            return await self._loop.run_in_executor(self._pool, function, *args)

        self.responder = CrlResponder(store, run) if clock is None else CrlResponder(store, run, clock=clock)
        self.port = self._call(self.responder.start("127.0.0.1", 0))[0][1]

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def get(self, url: str) -> tuple[int, bytes, str]:
        """GET ``url``: the status, the body and the media type (empty for an error)."""
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            return exc.code, b"", ""

    def fetch(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` of this responder: the status and the body."""
        status, body, _media_type = self.get(f"http://127.0.0.1:{self.port}{path}")
        return status, body

    def close(self) -> None:
        self._call(self.responder.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._pool.shutdown()

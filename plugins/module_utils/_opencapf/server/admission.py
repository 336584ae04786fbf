# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a connection that is not yet in a CAPF session may cost the service, and giving the memory
of ended connections back to the system.

Measured with ``scripts/hostile-load`` (docs/reliability.md, "Memory under hostile connections"):
asyncio gives every TLS connection a 256 KiB receive buffer, filled with zeros when the handshake
starts, so idle hostile connections cost about 0.3 MiB each; and after they closed, their objects
waited in reference cycles for a full garbage collection that an idle service never runs, and
the freed memory stayed in the C allocator's heap. The service therefore caps the connections
not yet in a session (``ServerOptions.max_connections``), and collects and trims after a burst of
ended connections.

Measured again per idle connection (``scripts/bench --only hostile``, docs/benchmarks.md): a
connection that had sent nothing yet cost about 70 KiB, because its TLS state (OpenSSL's
handshake buffers, some 40 KiB, and a 16 KiB receive buffer) was created before the client's
first byte. The driver creates no TLS state before the client's first byte
(``tls_link.Link.first_bytes``), and since it reads each connection's ``SSLSocket`` directly
(``tls_link``), no connection holds a receive buffer in Python: OpenSSL reads from the socket.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc

RECLAIM_AFTER = 100  # ended connections before the memory of a burst is reclaimed
RECLAIM_DELAY = 2.0  # seconds after the burst's first ended connection (its stragglers end meanwhile)


def _trim():
    try:
        library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return library.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_MALLOC_TRIM = _trim()


def release_memory() -> None:
    """Free the objects of ended connections now (they wait in reference cycles otherwise) and hand
    the freed heap pages back to the system (glibc ``malloc_trim``; elsewhere only the collection)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Reclaimer:
    """Reclaims memory ``RECLAIM_DELAY`` seconds after ``RECLAIM_AFTER`` connections ended: at most
    one collection per burst, none while connections come and go slowly (their garbage is then
    collected by Python's own schedule)."""

    def __init__(self, after: int = RECLAIM_AFTER, delay: float = RECLAIM_DELAY):
        self.after = after
        self.delay = delay
        self.runs = 0
        self._ended = 0
        self._timer: asyncio.TimerHandle | None = None

    def ended(self) -> None:
        """One connection ended (call once its transport is closed)."""
        self._ended += 1
        if self._ended >= self.after and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._timer = None
        self._ended = 0
        self.runs += 1
        release_memory()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

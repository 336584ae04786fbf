# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a connection that is not yet in a CAPF session may cost the service, and giving the memory
of ended connections back to the system.

Measured with ``scripts/hostile-load`` (docs/reliability.md, "Memory under hostile connections"):
asyncio gives every TLS connection a 256 KiB receive buffer, filled with zeros when the handshake
starts, so idle hostile connections cost about 0.3 MiB each; and after they closed, their objects
waited in reference cycles for a full garbage collection that an idle service never runs, and
the freed memory stayed in the C allocator's heap. The service therefore caps the connections
not yet in a session (``ServerOptions.max_connections``), and collects and trims once a burst of
ended connections is over (``Reclaimer``): under a steady stream of sessions, whose connections
never stop ending, at most once a minute, since a full collection every burst of a hundred had cost
5 % of the service's CPU time at 50 concurrent enrolments.

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
RECLAIM_DELAY = 2.0  # seconds without an ended connection: the burst is over (its stragglers have ended)
RECLAIM_LONGEST = 60.0  # seconds at most from the RECLAIM_AFTER-th ended connection to the collection


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
    """Reclaims memory once a burst of ended connections is over: after ``after`` connections ended,
    it collects when none has ended for ``delay`` seconds, or ``longest`` seconds after the
    ``after``-th, whichever comes first. So a burst costs one collection, none while connections
    come and go slowly (their garbage is then collected by Python's own schedule), and a steady
    stream of sessions one every ``longest`` seconds at most. An ended connection only counts and
    notes the time; the one timer looks at that time when it fires and waits again if need be."""

    def __init__(self, after: int = RECLAIM_AFTER, delay: float = RECLAIM_DELAY, longest: float = RECLAIM_LONGEST):
        self.after = after
        self.delay = delay
        self.longest = longest
        self.runs = 0
        self._ended = 0
        self._last = 0.0  # loop time of the last ended connection
        self._due = 0.0  # loop time at which the collection runs even if connections still end
        self._timer: asyncio.TimerHandle | None = None

    def ended(self) -> None:
        """One connection ended (call once its transport is closed)."""
        self._ended += 1
        if self._ended >= self.after:
            loop = asyncio.get_running_loop()
            self._last = loop.time()
            if self._timer is None:
                self._due = self._last + self.longest
                self._timer = loop.call_at(min(self._last + self.delay, self._due), self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._last + self.delay and now < self._due:  # still ending: look again once it may be over
            self._timer = loop.call_at(min(self._last + self.delay, self._due), self._check)
            return
        self._timer = None
        self._ended = 0
        self.runs += 1
        release_memory()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a connection that is not yet in a CAPF session may cost the service, and giving the memory
of ended connections back to the system.

Measured with ``scripts/hostile-load`` (docs/reliability.md, "Memory under hostile connections"):
asyncio gives every TLS connection a 256 KiB receive buffer, filled with zeros when the handshake
starts, so idle hostile connections cost about 0.3 MiB each; and after they closed, their objects
waited in reference cycles for a full garbage collection that an idle service never runs, and
the freed memory stayed in the C allocator's heap. The service therefore caps the connections
not yet in a session (``ServerOptions.max_connections``), gives TLS a receive buffer the size of
one TLS record, and collects and trims after a burst of ended connections.

Measured again per idle connection (``scripts/bench --only hostile``, docs/benchmarks.md): a
connection that had sent nothing yet cost about 70 KiB, because its TLS state (OpenSSL's
handshake buffers, some 40 KiB, and the 16 KiB receive buffer) was created before the client's
first byte; one with its handshake done cost about 46 KiB, 16 of them the receive buffer it held
between reads. The driver now creates no TLS state before the client's first byte
(``first_bytes``), and every TLS connection of a thread reads through one shared receive buffer
(each read is copied into the connection's TLS input at once, so one buffer serves them all).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import threading
from asyncio import sslproto

# One TLS record's plaintext is at most 16 KiB and CAPF messages are far smaller: a larger buffer
# only costs memory (the receive buffer is allocated, zero-filled, when the handshake starts).
TLS_BUFFER_BYTES = 16 * 1024
RECLAIM_AFTER = 100  # ended connections before the memory of a burst is reclaimed
RECLAIM_DELAY = 2.0  # seconds after the burst's first ended connection (its stragglers end meanwhile)


_RECEIVE_BUFFERS = threading.local()  # one receive buffer per thread (per event loop)


def _receive_buffer() -> memoryview:
    view = getattr(_RECEIVE_BUFFERS, "view", None)
    if view is None:
        view = _RECEIVE_BUFFERS.view = memoryview(bytearray(TLS_BUFFER_BYTES))
    return view


class _SharedBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol reading through its thread's one receive buffer.

    The transport asks ``get_buffer``, receives into it and calls ``buffer_updated`` in one go,
    whose first step copies the bytes into the connection's TLS input (``_incoming``): nothing of a
    connection stays in the buffer between reads, so the connections of one thread can share it
    instead of each keeping its own (16 KiB per connection, idle or not)."""

    max_size = TLS_BUFFER_BYTES  # also the size of the plaintext reads from TLS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ssl_buffer = self._ssl_buffer_view = None  # the buffer of its own, freed at once

    def get_buffer(self, n):
        self._ssl_buffer_view = _receive_buffer()  # where buffer_updated copies from
        return self._ssl_buffer_view


def compact_tls_buffers() -> None:
    """Give the asyncio TLS connections of this process one shared ``TLS_BUFFER_BYTES`` receive
    buffer per thread instead of a 256 KiB buffer each.

    asyncio creates its TLS protocol by the module attribute ``asyncio.sslproto.SSLProtocol`` and has
    no per-connection setting; ``service.serve`` replaces it for the process that runs the service
    (in which asyncio TLS is the service's alone). On uvloop, whose TLS is its own, it changes nothing:
    uvloop allocates a 256 KiB buffer per TLS connection without touching it, so only the pages a read
    fills become resident (``scripts/bench --only hostile``)."""
    if not issubclass(sslproto.SSLProtocol, _SharedBufferSSLProtocol):
        sslproto.SSLProtocol = _SharedBufferSSLProtocol


async def first_bytes(sock, timeout: float) -> bool:
    """Wait, reading nothing, until the peer of the accepted socket ``sock`` (not yet owned by a
    transport) has sent something or closed; False when ``timeout`` seconds passed first.

    TLS state costs about 60 KiB from the moment the handshake starts, even before the client's
    ClientHello; waiting here first, a connection that sends nothing costs only its socket and
    its task. The readiness comes from the event loop (``add_reader``, on asyncio and uvloop alike)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return True


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

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One accepted connection of the CAPF service, driven over a non-blocking ``ssl.SSLSocket``.

The connection stays a plain socket that nothing reads until the driver upgrades it: the client's
ClientHello waits in the kernel while the driver checks its limits and waits for a handshake slot,
and a silent client costs no TLS state. ``start_tls`` then wraps the socket
(``wrap_socket(server_side=True, do_handshake_on_connect=False)``) and drives the handshake, and
the session reads and writes the ``SSLSocket`` directly: OpenSSL reads from and writes to the
socket itself, with no memory BIOs, transport, protocol or stream objects in Python between them.

Readiness comes from the running event loop (``add_reader``/``add_writer`` on the socket, on
asyncio and uvloop alike). The connection keeps one reader registered for its whole life, and
the reader's callback retries the TLS operation the task waits for (the handshake, a read, the
closing): the task wakes only when that operation has completed (or failed, or its deadline has
passed), never for a readiness that yields no bytes. A reader that fires while nothing waits
(the client sends while its session's step runs) is removed after its second call, so that
bytes nobody reads cannot keep the loop busy, and registered again at the next wait. One timer
per connection stands for every deadline: it is moved only when a deadline comes earlier than the
one it is set for, and a wait whose deadline it passed without reaching it sets it again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

READ_SIZE = 16384  # one TLS record's plaintext at most; a CAPF message is far smaller
CLOSE_SECONDS = 2.0  # how long closing may take: our close_notify out, the client's in
DISCARD_READS = 4  # reads of unread bytes at most when a connection closes
EARLY = 0.001  # a timer may fire up to a millisecond early (uvloop's timers count milliseconds)

_TIMED_OUT = object()  # a wait's result: its deadline passed
_READABLE = object()  # an attempt's result: the operation needs the socket readable first
_WRITABLE = object()  # a wait's or an attempt's result: the operation needs the socket writable first
_RETRY = object()  # a wait's result: the socket is writable; try the operation again


class Link:
    """One accepted connection: a plain socket, unread until ``start_tls`` upgrades it, then an
    ``SSLSocket``. One task drives it; at most one wait is under way at a time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.tls: ssl.SSLSocket | None = None
        self._established = False  # the handshake completed: closing sends close_notify
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._reading = False  # the reader is registered
        self._unattended = 0  # reader calls since the last wait began while nothing waited
        self._waiter: asyncio.Future | None = None
        self._operation = None  # what the reader retries for the waiting task
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        try:
            self.peername = sock.getpeername()
        except OSError:  # the client is gone already
            self.peername = None

    # -- the connection's stages ----------------------------------------------------------------

    async def first_bytes(self, deadline: float) -> bool:
        """Wait, reading nothing, until the client has sent something or closed; False when the
        loop's clock reached ``deadline`` first. No TLS state exists while the client is silent."""
        try:
            await self._wait(_ready, False, deadline)
        except TimeoutError:
            return False
        return True

    async def start_tls(self, context: ssl.SSLContext, deadline: float) -> None:
        """Upgrade to TLS as the server, the whole handshake before ``deadline`` (loop time);
        ``TimeoutError`` when it passes, ``ssl.SSLError`` or ``OSError`` when the handshake fails."""
        self.tls = self.sock = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        await self._io(self.tls.do_handshake, deadline)
        self._established = True

    async def read(self, deadline: float) -> bytes | None:
        """The decrypted bytes the client has sent (what OpenSSL holds of the record it read, all of
        it); ``b""`` when the client closed the connection; None when ``deadline`` passed.

        It reads only from the reader's callback: OpenSSL reads one record at a time (no read-ahead)
        and ``_recv`` takes all it decrypted, so bytes not yet read are in the kernel, where they
        make the (level-triggered) reader fire, also when they came before the wait began."""
        try:
            result = await self._wait(self._recv, False, deadline)
            if result is _WRITABLE:  # the client renegotiates: OpenSSL must write first
                result = await self._io(self._recv, deadline)
            return result
        except TimeoutError:
            return None

    async def write(self, data: bytes, deadline: float) -> None:
        """Send all of ``data``; ``TimeoutError`` when the client has not taken it by ``deadline``."""
        tls = self.tls
        while data:
            try:
                sent = tls.send(data)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):  # the kernel's buffer is full
                sent = await self._io(lambda: tls.send(data), deadline)  # pylint: disable=cell-var-from-loop
            data = data[sent:]

    async def close(self) -> None:
        """Send close_notify and wait briefly for the client's (a client that reads nothing more
        cannot hold the connection), then close the socket. Never raises for the client's doing."""
        try:
            if self._established:
                self._established = False
                try:
                    await self._io(self.tls.unwrap, self._loop.time() + CLOSE_SECONDS)
                except (ssl.SSLError, OSError, ValueError):
                    pass
        finally:
            self._release()

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        if self.sock.fileno() == self._fd:
            _discard_unread(self._fd)
        self.sock.close()

    # -- waiting on the event loop --------------------------------------------------------------

    def _recv(self) -> bytes:
        tls = self.tls
        data = tls.recv(READ_SIZE)
        if data and tls.pending():  # a record larger than one read: take the rest now
            chunks = [data]
            while tls.pending():
                chunks.append(tls.recv(READ_SIZE))
            data = b"".join(chunks)
        return data

    async def _io(self, operation, deadline: float):
        """Run the non-blocking TLS ``operation`` until it completes; return its result."""
        result = _attempt(operation)
        while result is _READABLE or result is _WRITABLE:
            result = await self._wait(operation, result is _WRITABLE, deadline)
            if result is _RETRY:
                result = _attempt(operation)
        return result

    async def _wait(self, operation, writable: bool, deadline: float):
        """Wait until the reader completed ``operation`` (its result), the socket is writable
        (``_RETRY``), or ``deadline`` passed (``TimeoutError``)."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self._unattended = 0
        if writable:
            loop.add_writer(self._fd, self._writable)
        else:
            self._operation = operation
            if not self._reading:
                self._reading = True
                loop.add_reader(self._fd, self._readable)
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            self._arm(deadline)
        try:
            result = await waiter
        finally:
            self._waiter = self._operation = None
            if writable:
                loop.remove_writer(self._fd)
        if result is _TIMED_OUT:
            raise TimeoutError
        return result

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expired)

    def _expired(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._loop.time() + EARLY >= self._deadline:
            self._operation = None
            waiter.set_result(_TIMED_OUT)
        else:  # the wait's deadline lies beyond the one the timer was set for
            self._arm(self._deadline)

    def _readable(self) -> None:
        operation = self._operation
        if operation is None or self._waiter.done():  # nothing waits (or the wait was cancelled)
            self._unattended += 1
            if self._unattended > 1 and self._reading:  # bytes wait that nobody reads now
                self._reading = False
                self._loop.remove_reader(self._fd)
            return
        try:
            result = operation()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            result = _WRITABLE
        except Exception as exc:  # pylint: disable=broad-except  # the waiting task raises it
            self._operation = None
            self._waiter.set_exception(exc)
            return
        self._operation = None
        self._waiter.set_result(result)

    def _writable(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(_RETRY)


def _attempt(operation):
    """``operation()``'s result, or what it waits for: ``_READABLE`` or ``_WRITABLE``."""
    try:
        return operation()
    except ssl.SSLWantReadError:
        return _READABLE
    except ssl.SSLWantWriteError:
        return _WRITABLE


def _ready() -> bool:
    return True


def _discard_unread(fd: int) -> None:
    """Read and drop what the client sent that nobody read (bytes after a failed handshake, say):
    a socket closed with unread bytes resets the connection, and the client may then lose the
    alert or END_SESSION it has not read yet. Bounded: a client still sending is reset."""
    try:
        for _each in range(DISCARD_READS):
            if not os.read(fd, READ_SIZE):
                return
    except OSError:  # nothing more to read (BlockingIOError), or the connection is gone
        pass


__all__ = ["Link", "READ_SIZE", "CLOSE_SECONDS"]

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The simulator's TLS client: one phone's CAPF session with retries and Table 2 address order.

A communication failure (cannot connect, TLS failure, silence, connection lost before
END_SESSION) is retried ``retries`` times, ``retry_interval`` seconds apart (3 x 30 s, as on
phones). A simulated power failure stops the run; the phone resumes on its next run with the
authentication mode it kept in flash.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import warnings
from dataclasses import dataclass, field

from ..errors import CapfError
from ..protocol.constants import DEFAULT_PORT, Reason
from ..protocol.phone import PhoneBehaviour, PhoneSession, PowerFailure
from ..sockets import set_nodelay
from . import addressing
from .identity import PhoneIdentity

READ_SIZE = 65536
OUTCOMES = {Reason.NO_ACTION: "no_operation", Reason.UPDATE_CERTIFICATE: "ok", Reason.INVALID_ELEMENT: "failed",
            Reason.UNKNOWN_DEVICE: "unknown_device"}


@dataclass
class Target:
    """The CAPF servers a phone was given. An entry of ``addresses`` is an address (at ``port``) or an
    ``(address, port)`` pair: several CAPF nodes, tried in Table 2 order and, within a family, in the
    order given; a phone whose session with one fails goes on with the next at once."""

    addresses: tuple  # CAPF addresses the phone was given
    port: int = DEFAULT_PORT
    cafile: str | None = None  # the CAPF certificate (trust anchor); None: do not verify
    cadata: str | None = None
    legacy_tls: bool = False
    timeout: float = 10.0  # per read, like capfc's default
    source_address: str | None = None  # the local address to connect from (None: the system's choice)

    _context: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def context(self) -> ssl.SSLContext:
        """The TLS client context of every phone given this target, made once (loading the CAPF
        certificate into a context costs as much as a phone's handshake); made again when the
        trust anchor, its file or ``legacy_tls`` changed."""
        key = (self.cafile, self.cadata, self.legacy_tls, _file_version(self.cafile))
        if self._context is None or self._context[0] != key:
            self._context = (key, client_context(self))
        return self._context[1]

    def endpoints(self) -> list[tuple[str, int]]:
        """Every ``(address, port)`` the phone was given, in the order given."""
        return [(entry[0], int(entry[1])) if isinstance(entry, (tuple, list)) else (entry, self.port)
                for entry in self.addresses]


@dataclass
class EnrolResult:
    device_name: str
    outcome: str  # ok | no_operation | failed | unknown_device | cannot_connect | communication_failure | ...
    end_reason: int | None = None
    operation: str = ""
    address: str = ""
    port: int | None = None  # the CAPF port of the session that ended
    attempts: int = 0
    key: str = ""
    detail: str = ""
    fetched: int = 0
    retry_delay: int | None = None  # the server said RETRY_LATER (X-CSR/1)
    session_id: int | None = None  # the server's id of the session that ended (as in its session records)
    tried: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "no_operation", "retry_later")


def client_context(target: Target) -> ssl.SSLContext:
    if target.cafile or target.cadata:
        context = ssl.create_default_context(cafile=target.cafile, cadata=target.cadata)
        context.check_hostname = False  # capfc: chain checked against the CAPF certificate, no host name
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if target.legacy_tls:
        with warnings.catch_warnings():  # TLS 1.0 is deprecated; old phones still speak it
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _file_version(path: str | None):
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


class CommunicationFailure(Exception):
    pass


class _Connection:
    """One phone's TLS connection: a non-blocking ``SSLSocket`` driven by the running event loop
    (``sock_connect``, ``add_reader``/``add_writer``), one timer per wait. The TLS work is OpenSSL's
    on the socket itself, without a memory-BIO transport and stream reader and writer in Python
    above it, which made up much of what a simulated phone cost its process."""

    def __init__(self, loop, tls: ssl.SSLSocket):
        self.loop = loop
        self.tls = tls
        self.fd = tls.fileno()

    async def _wait(self, writable: bool, deadline: float) -> None:
        """Until the socket is readable (writable), or ``TimeoutError`` at ``deadline`` (loop time)."""
        loop = self.loop
        waiter = loop.create_future()
        if writable:
            loop.add_writer(self.fd, _wake, waiter)
        else:
            loop.add_reader(self.fd, _wake, waiter)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if writable:
                loop.remove_writer(self.fd)
            else:
                loop.remove_reader(self.fd)

    async def _retry(self, operation, deadline: float, *args):
        """``operation(*args)`` again each time OpenSSL needs the socket readable or writable."""
        while True:
            try:
                return operation(*args)
            except ssl.SSLWantReadError:
                await self._wait(False, deadline)
            except ssl.SSLWantWriteError:
                await self._wait(True, deadline)

    async def handshake(self, deadline: float) -> None:
        await self._retry(self.tls.do_handshake, deadline)

    async def read(self, timeout: float) -> bytes:
        return await self._retry(self.tls.recv, self.loop.time() + timeout, READ_SIZE)

    async def write(self, data: bytes, timeout: float) -> None:
        view = memoryview(data)
        deadline = self.loop.time() + timeout
        while view:
            view = view[await self._retry(self.tls.send, deadline, view):]

    async def close(self, timeout: float = 2.0) -> None:
        """Send close_notify and wait (at most ``timeout``) for the server's, as a stream's
        ``close()`` and ``wait_closed()`` do; then close the socket."""
        try:
            await self._retry(self.tls.unwrap, self.loop.time() + timeout)
        except (OSError, ssl.SSLError, ValueError, TimeoutError):
            pass
        finally:
            self.tls.close()


def _wake(waiter) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(waiter) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _connect(endpoint: tuple[str, int], target: Target, context: ssl.SSLContext) -> _Connection:
    """A TCP connection to ``endpoint`` (from ``target.source_address`` if given) with its TLS
    handshake done, within ``target.timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + target.timeout
    address, port = endpoint
    infos = await _resolve(loop, address, port)
    last: Exception = OSError(f"{address} resolved to no address")
    for family, kind, proto, _name, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if target.source_address:
                sock.bind((await _resolve(loop, target.source_address, 0, family))[0][4])
            async with asyncio.timeout_at(deadline):
                await loop.sock_connect(sock, sockaddr)
        except OSError as exc:  # TimeoutError included
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        set_nodelay(sock)  # phones' messages are small: no Nagle delay
        connection = _Connection(loop, context.wrap_socket(sock, do_handshake_on_connect=False))
        try:
            await connection.handshake(deadline)
        except BaseException:
            connection.tls.close()
            raise
        return connection
    raise last


async def _resolve(loop, host: str, port: int, family: int = socket.AF_UNSPEC) -> list:
    """A numeric address at once; a host name through the loop's resolver (each time: names may move)."""
    try:
        return _numeric(host, port, family)
    except socket.gaierror:
        return await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)


@functools.lru_cache(maxsize=4096)
def _numeric(host: str, port: int, family: int) -> list:
    """``getaddrinfo`` of a numeric address (``gaierror`` for a name), once per address and port:
    every phone of a fleet connects to the same few."""
    return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)


async def _session(identity: PhoneIdentity, endpoint: tuple[str, int], target: Target, context, behaviour,
                   barrier=None) -> EnrolResult:
    address, port = endpoint
    try:
        connection = await _connect(endpoint, target, context)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise CommunicationFailure(f"cannot connect to {address} port {port}: {_text(exc)}") from None
    phone = PhoneSession(identity, behaviour)
    try:
        while not phone.done:
            try:
                data = await connection.read(target.timeout)
            except TimeoutError:
                raise CommunicationFailure("the CAPF server went silent") from None
            if not data:
                raise CommunicationFailure("the CAPF server closed the connection before END_SESSION")
            reply = phone.receive_data(data)
            if barrier is not None:  # hold the open session until every phone of the group has one
                await asyncio.wait_for(barrier.wait(), target.timeout * 6)
                barrier = None
            if reply:
                try:
                    await connection.write(reply, target.timeout)
                except TimeoutError:
                    raise CommunicationFailure("the CAPF server went silent") from None
    except (OSError, ssl.SSLError) as exc:
        raise CommunicationFailure(f"connection failed: {_text(exc)}") from None
    finally:
        await connection.close()
    result = phone.result
    if result.retry_delay is not None:
        return EnrolResult(identity.device_name, "retry_later", None, result.operation, address, port=port,
                           key=result.key, retry_delay=result.retry_delay, session_id=phone.session_id)
    return EnrolResult(identity.device_name, OUTCOMES.get(result.end_reason, f"reason_{result.end_reason}"),
                       result.end_reason, result.operation, address, port=port, key=result.key,
                       fetched=result.fetched, session_id=phone.session_id)


async def enrol(identity: PhoneIdentity, target: Target, *, behaviour: PhoneBehaviour | None = None,
                retries: int = 3, retry_interval: float = 30.0, string_entered: bool = True,
                barrier=None) -> EnrolResult:
    """Run one phone's CAPF session to its end, retrying communication failures."""
    behaviour = behaviour or PhoneBehaviour()
    contact, why = identity.contact_decision(string_entered)
    if not contact:
        return EnrolResult(identity.device_name, "not_contacted", detail=why)
    endpoints = addressing.ordered_addresses(identity.settings.ip_mode, identity.settings.phone_families,
                                             target.endpoints())
    if not endpoints:
        return EnrolResult(identity.device_name, "cannot_connect",
                           detail="no CAPF address of a family this phone can use (Table 2)")
    identity.begin_operation()
    context = target.context()
    attempts = 0
    tried = []
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(retry_interval)
        attempts += 1
        for endpoint in endpoints:
            address, port = endpoint
            tried.append(address if port == target.port else f"{address} port {port}")
            try:
                result = await _session(identity, endpoint, target, context, behaviour, barrier)
            except CommunicationFailure as exc:
                last = str(exc)
                continue
            except PowerFailure as exc:
                return EnrolResult(identity.device_name, "power_failure", attempts=attempts, address=address,
                                   detail=str(exc), tried=tried)
            except CapfError as exc:  # ProtocolError included: the server broke the protocol
                return EnrolResult(identity.device_name, "protocol_error", attempts=attempts, address=address,
                                   detail=str(exc), tried=tried)
            result.attempts, result.tried = attempts, tried
            if result.outcome in ("ok", "no_operation") or result.end_reason is not None:
                identity.complete_operation()
            return result
    return EnrolResult(identity.device_name, "communication_failure", attempts=attempts, detail=last, tried=tried)


def _text(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__

"""The TLS driver over a non-blocking ``SSLSocket`` (``server/tls_link.py``), over real sockets.

Invariant: whatever way the client's bytes are cut into TLS records and the records into TCP
segments, and however slowly the client takes what the server writes, the server reads every
message whole and delivers every byte it writes, in order; a client that takes nothing is given up
at the deadline, never waited for beyond it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest

from support.phones import phone
from support.protocol import EVENT_LOOPS, RunningServer, add_phone, phone_row
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder
from _opencapf.protocol.constants import Command
from _opencapf.protocol.phone import PhoneSession
from _opencapf.ca import authority
from _opencapf.server import event_loop
from _opencapf.server.service import CapfServer
from _opencapf.server.tls_link import Link


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class RecordClient:
    """A TLS client over memory BIOs: the test decides which records go into which TCP send."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = _client_context().wrap_bio(self.incoming, self.outgoing)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def records(self, data: bytes, size: int) -> list[bytes]:
        """``data`` as TLS records of ``size`` plaintext bytes each, one list item per record."""
        out = []
        for start in range(0, len(data), size):
            self.tls.write(data[start:start + size])
            out.append(self.outgoing.read())
        return out

    def read(self) -> bytes:
        """What the server sent next (b"" once it closed)."""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._fill():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""


def _enrol_with_records(server: RunningServer, identity, size: int, one_segment: bool) -> list:
    """A whole CAPF session whose every answer is cut into records of ``size`` bytes, sent record
    by record (each its own TCP segment) or all together in one send; the server's commands."""
    client = RecordClient(server.port)
    handset = PhoneSession(identity)
    decoder = Decoder()
    commands = []
    try:
        while True:
            data = client.read()
            if not data:
                return commands
            for message in decoder.feed(data):
                commands.append(message.command)
                reply = handset.receive_data(codec.encode(message))
                if not reply:
                    continue
                records = client.records(reply, size)
                assert len(records) > 1
                if one_segment:
                    client.sock.sendall(b"".join(records))
                else:
                    for record in records:
                        client.sock.sendall(record)
                        time.sleep(0.002)  # a segment of its own
    finally:
        client.sock.close()


@pytest.mark.parametrize("loop", EVENT_LOOPS)
@pytest.mark.parametrize("one_segment", [False, True], ids=["record-per-segment", "records-in-one-segment"])
def test_a_message_cut_into_many_records_is_read_whole(ca_store, tmp_path, loop, one_segment):
    name = "SEP00000000D001"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, name)
    server = RunningServer(ca_store, loop=loop, step_timeout=10.0)
    try:
        commands = _enrol_with_records(server, identity, 5, one_segment)
    finally:
        server.stop()
    assert commands[0] == Command.AUTH_REQUEST and commands[-1] == Command.END_SESSION
    assert Command.STORE_CERTIFICATE_REQUEST in commands
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "succeeded", row["operation_reason"]
    with ca_store.read() as tx:
        outcomes = [r["outcome"] for r in tx.query("SELECT outcome FROM sessions")]
    assert outcomes == ["succeeded"]


# -- writing to a client that does not read ------------------------------------------------------------

PAYLOAD = bytes(range(256)) * (16 * 1024)  # 4 MiB: far more than the sockets' buffers hold
BUFFER = 64 * 1024  # each end's socket buffer, fixed: the kernel's autotuning may grow it past PAYLOAD


def _small_buffered_connection(port: int) -> socket.socket:
    """A client socket whose receive buffer is fixed at BUFFER (set before connecting, so the window
    it announces stays that small)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    return sock


def _server_context(ca_store) -> ssl.SSLContext:
    """The CAPF service's own TLS context (its certificate and key)."""
    server = CapfServer(ca_store)
    try:
        with ca_store.read() as tx:
            signer = authority.signer(ca_store, tx)
        return server._tls_context(signer, False)  # pylint: disable=protected-access
    finally:
        server._pool.shutdown()  # pylint: disable=protected-access


def _accepted(client_thread):
    """A listening socket, a client thread connected to it, and the server's Link writing to it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    worker = threading.Thread(target=client_thread, args=(port,), daemon=True)
    worker.start()
    sock, _address = listener.accept()
    listener.close()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.setblocking(False)
    return sock, worker


def _write_payload(context, client, loop, seconds: float, closed: threading.Event | None = None):
    """The server's Link, after its handshake with ``client``, writes PAYLOAD within ``seconds``, then
    closes (``closed`` is set once it has); return the seconds the write took, the exception it
    raised (None) and the seconds closing took."""
    sock, worker = _accepted(client)

    async def serve():
        link = Link(sock)
        loop_now = asyncio.get_running_loop().time
        failure = None
        try:
            await link.start_tls(context, loop_now() + 10)
            began = loop_now()
            try:
                await link.write(PAYLOAD, began + seconds)
            except TimeoutError as exc:
                failure = exc
            waited = loop_now() - began
        finally:
            closing = loop_now()
            await link.close()
            if closed is not None:
                closed.set()
        return waited, failure, loop_now() - closing

    result = event_loop.run(serve(), loop)
    worker.join(15)
    return result


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_a_client_that_reads_slowly_gets_every_byte_in_order(ca_store, loop):
    context = _server_context(ca_store)
    received = []

    def client(port):
        with _client_context().wrap_socket(_small_buffered_connection(port)) as tls:
            time.sleep(0.5)  # the server's writes fill both buffers meanwhile
            chunks = []
            total = 0
            while total < len(PAYLOAD):
                data = tls.recv(65536)
                if not data:
                    break
                chunks.append(data)
                total += len(data)
            received.append(b"".join(chunks))

    waited, failure, closing = _write_payload(context, client, loop, 10)
    assert failure is None and closing < 3
    assert received == [PAYLOAD]
    assert waited >= 0.3  # the write waited for the client to read: its sends were partial


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_a_client_that_reads_nothing_is_given_up_at_the_deadline(ca_store, loop):
    context = _server_context(ca_store)
    done = threading.Event()

    def client(port):
        with _client_context().wrap_socket(_small_buffered_connection(port)):
            done.wait(15)  # reads nothing

    waited, failure, closing = _write_payload(context, client, loop, 0.5, done)
    assert isinstance(failure, TimeoutError)
    assert 0.45 <= waited < 2
    assert closing < 3  # close_notify cannot go out either: closing is bounded all the same


# -- TLS 1.3 session tickets ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_a_tls13_handshake_yields_no_session_ticket(ca_store, loop):
    """Phones never resume a TLS session: the server issues no TLS 1.3 tickets (OpenSSL sends two by
    default, each made, encrypted and sent for nothing)."""
    server = RunningServer(ca_store, loop=loop)
    try:
        context = _client_context()
        with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=15)) as sock:
            assert sock.version() == "TLSv1.3"
            first = Decoder().feed(sock.recv(65536))  # tickets would come before the first message
            assert first[0].command == Command.AUTH_REQUEST
            assert sock.session is not None and not sock.session.has_ticket
    finally:
        server.stop()

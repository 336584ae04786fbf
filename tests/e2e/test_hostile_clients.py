"""Slow and hostile clients over real sockets: slowloris connections, per-address limits, malformed
TLS and non-TLS bytes.

Linux routes all of 127.0.0.0/8 to the loopback interface, so the attacker connects from
127.0.0.1 and the legitimate phone from 127.0.0.2 (a bound source address): the per-address limit
tells them apart exactly as it would two hosts."""

from __future__ import annotations

import os
import random
import socket
import ssl
import struct
import time

import pytest

from support.phones import phone, run_enrol
from support.protocol import EVENT_LOOPS, RunningServer, add_phone, read_message
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Message
from _opencapf.protocol.constants import Command, Reason, Tag
from _opencapf.store import service as service_records

ATTACKER, PHONE = "127.0.0.1", "127.0.0.2"


def _loopback_alias_works() -> bool:
    try:
        with socket.socket() as probe:
            probe.bind((PHONE, 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _loopback_alias_works(), reason="127.0.0.2 is not a loopback address here")


def set_parameters(store, **values):
    with store.transaction() as tx:
        service_records.write(tx, "test", values)


def raw_connect(server, source=ATTACKER, timeout=10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout, source_address=(source, 0))


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello (what a phone sends first)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def closed_by_server(sock) -> bool:
    """True once the server hangs up (an orderly close or a reset)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def eventually(condition):
    """Wait (bounded) for something the test cannot be told about, e.g. the server admitting a socket."""
    for _attempt in range(400):
        if condition():
            return True
        time.sleep(0.025)
    return condition()


def session_rows(store, at_least=0, outcome=None):
    for _attempt in range(400):
        with store.read() as tx:
            rows = tx.query("SELECT outcome, reason, peer FROM sessions ORDER BY id")
        if outcome is not None:
            rows = [row for row in rows if row["outcome"] == outcome]
        if len(rows) >= at_least:
            return rows
        time.sleep(0.025)
    return rows


def enrols_from(store, server, tmp_path, name, source=PHONE):
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    return run_enrol(phone(tmp_path, name), server, target_options={"source_address": source}).outcome


def no_tracebacks(caplog):
    return not [record for record in caplog.records if record.exc_info]


@pytest.fixture
def server(request, ca_store, store_path):
    """A handshake deadline far beyond each test: connections stay where the test put them. On asyncio, or the
    event loop a test names (``indirect``)."""
    running = RunningServer(store_path, ["127.0.0.1"], getattr(request, "param", "asyncio"), step_timeout=2.0,
                            handshake_timeout=60.0)
    yield running
    running.stop()


@pytest.fixture
def quick_server(request, ca_store, store_path):
    running = RunningServer(store_path, ["127.0.0.1"], getattr(request, "param", "asyncio"), step_timeout=2.0,
                            handshake_timeout=1.5)
    yield running
    running.stop()


# -- slowloris -------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", EVENT_LOOPS, indirect=True)
def test_silent_connections_from_one_address_do_not_lock_out_a_phone(ca_store, server, tmp_path, caplog):
    """Thirty connections that never send a byte: all but max_sessions_per_address are refused at
    once, the rest hold neither a handshake slot nor a session slot (max_sessions is 1 here), and a
    phone enrols meanwhile."""
    set_parameters(ca_store, max_sessions=1, max_sessions_per_address=3)
    idle = [raw_connect(server) for _index in range(30)]
    try:
        refused = session_rows(ca_store, 27, outcome="refused")
        assert eventually(lambda: server.server.before_session == 3)
        assert server.server.handshaking == 0  # no TLS before the client's first byte
        assert len(refused) == 27
        assert all("max_sessions_per_address 3" in row["reason"] and row["peer"].startswith(ATTACKER + ":")
                   for row in refused)
        assert enrols_from(ca_store, server, tmp_path, "SEP00000000A001") == "ok"
        assert server.server.per_address.get(ATTACKER) == 3  # the three admitted are still open
        assert server.server.active == 0  # and none of them holds a session slot
    finally:
        for sock in idle:
            sock.close()
    assert caplog.text.count("per-address connection limit reached") == 1  # not one line per connection
    assert no_tracebacks(caplog)


@pytest.mark.parametrize("quick_server", EVENT_LOOPS, indirect=True)
def test_idle_connections_are_closed_at_the_handshake_deadline(ca_store, quick_server):
    server = quick_server
    set_parameters(ca_store, max_sessions_per_address=5)
    idle = [raw_connect(server) for _index in range(5)]
    try:
        assert all(closed_by_server(sock) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    rows = session_rows(ca_store, 5)
    assert [row["outcome"] for row in rows] == ["tls_failed"] * 5
    assert all(row["reason"] == "TLS handshake failed: timed out" for row in rows)
    assert server.server.per_address == {} and server.server.handshaking == 0
    with raw_connect(server) as again:  # the address may connect again once its connections are gone
        assert closed_by_server(again)
    assert session_rows(ca_store, 6)[-1]["outcome"] == "tls_failed"


def test_a_trickled_handshake_gets_one_deadline_not_one_per_read(ca_store, quick_server):
    """A ClientHello sent one byte every 50 ms would take many times the handshake deadline;
    the server hangs up before the client has sent it all."""
    hello = client_hello()
    assert len(hello) * 0.05 > 3 * quick_server.server.options.handshake_timeout
    sent = 0
    with raw_connect(quick_server) as sock:
        try:
            for byte in hello:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            closed_by_server(sock)
    (row,) = session_rows(ca_store, 1)
    assert row["outcome"] == "tls_failed" and "timed out" in row["reason"]
    assert sent < len(hello)


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_slowloris_does_not_exhaust_the_handshake_slots(ca_store, store_path, tmp_path, loop):
    """With room for only four handshakes, three stalled handshakes from one address (its limit)
    leave a slot for the phone; the fourth attacker connection is refused, not queued."""
    running = RunningServer(store_path, ["127.0.0.1"], loop, step_timeout=2.0, handshake_timeout=30.0,
                            max_handshakes=4)
    try:
        set_parameters(ca_store, max_sessions_per_address=3)
        hello = client_hello()
        stalled = []
        for _index in range(4):
            sock = raw_connect(running)
            sock.sendall(hello[:len(hello) // 2])  # half a ClientHello, then nothing
            stalled.append(sock)
        (refused,) = session_rows(ca_store, 1, outcome="refused")
        assert eventually(lambda: running.server.handshaking == 3)
        assert "max_sessions_per_address 3" in refused["reason"]
        assert enrols_from(ca_store, running, tmp_path, "SEP00000000A002") == "ok"
        assert running.server.per_address.get(ATTACKER) == 3
        for sock in stalled:
            sock.close()
    finally:
        running.stop()


def test_the_limit_counts_each_address_separately_and_follows_the_parameter(ca_store, server, tmp_path):
    set_parameters(ca_store, max_sessions_per_address=1)
    with raw_connect(server, source="127.0.0.3") as _held:
        assert eventually(lambda: server.server.per_address.get("127.0.0.3") == 1)
        with raw_connect(server, source="127.0.0.3") as second:
            assert closed_by_server(second)
        assert enrols_from(ca_store, server, tmp_path, "SEP00000000A003") == "ok"  # another address
        set_parameters(ca_store, max_sessions_per_address=2)  # applies to the next connection
        with raw_connect(server, source="127.0.0.3") as third:
            third.sendall(b"\x16\x03\x01\x00\x05hello")
            assert closed_by_server(third)
    outcomes = [row["outcome"] for row in session_rows(ca_store, 3)]
    assert outcomes.count("refused") == 1 and "succeeded" in outcomes


# -- malformed TLS and non-TLS bytes -----------------------------------------------------------------


def _garbage_then_hello():
    return b"\x00\xffGARBAGE\r\n" + client_hello()


def _alert_storm():
    # 2,000 TLS alert records (fatal handshake_failure, then warning close_notify), no ClientHello.
    return (b"\x15\x03\x03\x00\x02\x02\x28" + b"\x15\x03\x03\x00\x02\x01\x00") * 1000


def _hello_then_alerts():
    return client_hello() + b"\x15\x03\x03\x00\x02\x01\x00" * 500


def _oversized_record():
    return b"\x16\x03\x01\xff\xff" + os.urandom(2048)


def _sslv2_hello():
    return b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x00\x00\x04" * 7 + os.urandom(16)


def _random_bytes():
    return random.Random(8).randbytes(4096)


@pytest.mark.parametrize("payload", [
    pytest.param(lambda: b"GET / HTTP/1.1\r\nHost: capf\r\n\r\n", id="http-request"),
    pytest.param(lambda: b"CONNECT capf:3804 HTTP/1.1\r\n\r\n", id="http-connect"),
    pytest.param(_garbage_then_hello, id="garbage-before-client-hello"),
    pytest.param(lambda: client_hello()[:40], id="truncated-client-hello"),
    pytest.param(_alert_storm, id="alert-storm"),
    pytest.param(_hello_then_alerts, id="client-hello-then-alert-storm"),
    pytest.param(_oversized_record, id="oversized-record"),
    pytest.param(_sslv2_hello, id="sslv2-client-hello"),
    pytest.param(_random_bytes, id="random-bytes"),
])
@pytest.mark.parametrize("quick_server", EVENT_LOOPS, indirect=True)
def test_malformed_bytes_before_tls(ca_store, quick_server, tmp_path, caplog, payload):
    server = quick_server
    with raw_connect(server) as sock:
        try:
            sock.sendall(payload())
            sock.shutdown(socket.SHUT_WR)  # and nothing more: also ends a truncated handshake
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_server(sock)
    (row,) = session_rows(ca_store, 1)
    assert row["outcome"] == "tls_failed" and row["reason"].startswith("TLS handshake failed")
    assert enrols_from(ca_store, server, tmp_path, "SEP00000000B001") == "ok"
    assert no_tracebacks(caplog)


def _tls(server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(raw_connect(server))


def test_random_bytes_inside_tls_end_the_session_with_reason_7(ca_store, quick_server, tmp_path, caplog):
    server = quick_server
    with _tls(server) as sock:
        request = read_message(sock)
        assert request.command == Command.AUTH_REQUEST
        sock.sendall(b"\x55\x02" + struct.pack(">I", request.session_id) + random.Random(3).randbytes(600))
        end = read_message(sock)
    assert end.command == Command.END_SESSION and end.u8(Tag.REASON) == Reason.INVALID_ELEMENT
    (row,) = session_rows(ca_store, 1)
    assert row["outcome"] == "protocol_error"
    assert enrols_from(ca_store, server, tmp_path, "SEP00000000B002") == "ok"
    assert no_tracebacks(caplog)


def test_random_bytes_under_tls_after_the_handshake(ca_store, quick_server, tmp_path, caplog):
    server = quick_server
    """Bytes that are not TLS records once the handshake is done: the session ends on record."""
    with _tls(server) as sock:
        assert read_message(sock).command == Command.AUTH_REQUEST
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        raw.settimeout(10)  # the duplicate shares the non-blocking descriptor of the timed TLS socket
        try:
            raw.sendall(random.Random(5).randbytes(3000))
            assert closed_by_server(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            raw.close()
    (row,) = session_rows(ca_store, 1)
    assert row["outcome"] in ("aborted", "protocol_error") and row["reason"]
    assert enrols_from(ca_store, server, tmp_path, "SEP00000000B003") == "ok"
    assert no_tracebacks(caplog)


def test_a_valid_message_after_end_of_tls_is_not_read(ca_store, quick_server, tmp_path):
    server = quick_server
    """close_notify, then a CAPF message in the clear on the same socket: never parsed."""
    with _tls(server) as sock:
        request = read_message(sock)
        plain = sock.unwrap()
        try:
            plain.sendall(codec.encode(Message(Command.AUTH_RESPONSE, request.session_id,
                                               ((Tag.DEVICE_NAME, b"SEP00000000B004\x00"),))))
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed_by_server(plain)
        plain.close()
    (row,) = session_rows(ca_store, 1)
    assert row["outcome"] in ("aborted", "protocol_error") and row["reason"]
    assert enrols_from(ca_store, server, tmp_path, "SEP00000000B005") == "ok"


# -- the global cap on connections not yet in a session ----------------------------------------------


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_connections_beyond_max_connections_are_closed_before_tls(ca_store, store_path, tmp_path, caplog, loop):
    """Many addresses, each within its own limit, together reach max_connections: further connections
    from anywhere are refused at once, without a handshake, until some end; a connection that reached
    its session no longer counts, so a phone enrols once the silent ones are gone."""
    running = RunningServer(store_path, ["127.0.0.1"], loop, step_timeout=2.0, handshake_timeout=60.0,
                            max_connections=6)
    try:
        held = [raw_connect(running, source=f"127.0.0.{30 + index % 3}") for index in range(6)]
        try:
            assert eventually(lambda: running.server.before_session == 6)
            with raw_connect(running, source="127.0.0.40") as beyond:
                beyond.sendall(client_hello())
                received = b""
                try:
                    while chunk := beyond.recv(4096):
                        received += chunk
                except ConnectionResetError:
                    pass
                assert received == b""  # closed (or reset), no ServerHello
            (refused,) = session_rows(ca_store, 1, outcome="refused")
            assert refused["reason"] == "connection limit reached (max_connections 6)"
            assert refused["peer"].startswith("127.0.0.40:")
        finally:
            for sock in held:
                sock.close()
        assert eventually(lambda: running.server.before_session == 0)
        assert enrols_from(ca_store, running, tmp_path, "SEP00000000C001") == "ok"
        assert running.server.before_session == 0 and running.server.per_address == {}
    finally:
        running.stop()
    assert caplog.text.count("connection limit reached") == 1
    assert no_tracebacks(caplog)

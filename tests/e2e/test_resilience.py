"""Bad input, slow clients, interoperability quirks, TLS profiles and live parameter changes.

Each bad client must end with the protocol's own error reason, be logged once without a
traceback, and leave the server serving everyone else."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import pytest

from support.protocol import RunningServer, add_phone, certificate_rows, read_message
from support.phones import phone, run_enrol
from support.store_phones import change_phone
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Message
from _opencapf.protocol.constants import Command, Reason, Tag
from _opencapf.protocol.phone import PhoneBehaviour
from _opencapf.store import service as service_records


@pytest.fixture
def quick_server(ca_store, store_path):
    running = RunningServer(store_path, ["127.0.0.1"], step_timeout=1.0, handshake_timeout=1.0)
    yield running
    running.stop()


def tls_connect(server, **context_options):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in context_options.items():
        setattr(context, name, value)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(raw)


def sessions(store, at_least=0):
    """The session rows; waits (bounded) for ``at_least`` of them when the phone cannot know."""
    for _attempt in range(200):
        with store.read() as tx:
            rows = tx.query("SELECT outcome, reason FROM sessions ORDER BY id")
        if len(rows) >= at_least:
            return rows
        time.sleep(0.025)
    return rows


def assert_still_serving(store, server, tmp_path, name="SEP00000000BEEF"):
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    assert run_enrol(phone(tmp_path, name), server).outcome == "ok"


def no_tracebacks(caplog):
    return [record for record in caplog.records if record.exc_info]


def test_non_tls_bytes(quick_server, ca_store, tmp_path, caplog):
    with socket.create_connection(("127.0.0.1", quick_server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(100) == b""  # the server hangs up
    assert sessions(ca_store, 1)[0]["outcome"] == "tls_failed"
    assert_still_serving(ca_store, quick_server, tmp_path)
    assert caplog.text.count("TLS handshake failed") == 1 and not no_tracebacks(caplog)


@pytest.mark.parametrize("payload, rule", [
    (b"\x00" * 8, "protocol id"),
    (codec.encode(Message(Command.AUTH_RESPONSE, 1, ((Tag.DEVICE_NAME, b"SEP1\x00"),))), "session id"),
    (b"\x55\x02" + b"SID!" + b"\x00\x05" + b"\x0d\x00\x09SEP", "claims 9 bytes"),
    (b"\x55\x02" + b"SID!" + b"\xff\xff", "exceeds the limit"),
    (b"SESSION-ID-FIX", "expected AUTH_RESPONSE"),
])
def test_malformed_input_ends_with_reason_7(quick_server, ca_store, tmp_path, caplog, payload, rule):
    with tls_connect(quick_server) as sock:
        auth_request = read_message(sock)
        sid = struct.pack(">I", auth_request.session_id)
        if payload == b"SESSION-ID-FIX":
            payload = codec.encode(Message(Command.STORE_CERTIFICATE_RESPONSE, auth_request.session_id,
                                           ((Tag.REASON, b"\x01"),)))
        sock.sendall(payload.replace(b"SID!", sid))
        end = read_message(sock)
    assert end.command == Command.END_SESSION and end.u8(Tag.REASON) == Reason.INVALID_ELEMENT
    (row,) = sessions(ca_store)
    assert row["outcome"] == "protocol_error" and rule in row["reason"]
    assert_still_serving(ca_store, quick_server, tmp_path)
    assert not no_tracebacks(caplog)


@pytest.mark.parametrize("stall_after", [b"", b"\x55\x02\x00"])
def test_silent_or_slow_client_times_out(quick_server, ca_store, tmp_path, caplog, stall_after):
    with tls_connect(quick_server) as sock:
        read_message(sock)
        sock.sendall(stall_after)  # nothing, or a partial header, then silence
        end = read_message(sock)
    assert end.u8(Tag.REASON) == Reason.INVALID_ELEMENT
    (row,) = sessions(ca_store)
    assert row["outcome"] == "timeout"
    assert_still_serving(ca_store, quick_server, tmp_path)
    assert not no_tracebacks(caplog)


def test_silent_before_tls_handshake(quick_server, ca_store, tmp_path):
    with socket.create_connection(("127.0.0.1", quick_server.port), timeout=10) as sock:
        assert sock.recv(100) == b""  # the handshake timeout closes it
    assert sessions(ca_store, 1)[0]["outcome"] == "tls_failed"
    assert_still_serving(ca_store, quick_server, tmp_path)


def test_client_vanishing_mid_session_marks_the_operation_failed(quick_server, ca_store):
    add_phone(ca_store, "SEP00000000CAFE", operation="install_upgrade", key_order="ec")
    with tls_connect(quick_server) as sock:
        request = read_message(sock)
        sock.sendall(codec.encode(Message(Command.AUTH_RESPONSE, request.session_id,
                                          ((Tag.VERSION, b"\x03"), (Tag.DEVICE_NAME, b"SEP00000000CAFE\x00")))))
        assert read_message(sock).command == Command.KEY_GENERATE_REQUEST
    (row,) = sessions(ca_store, 1)
    assert row["outcome"] == "aborted"
    from support.protocol import phone_row
    assert phone_row(ca_store, "SEP00000000CAFE")["operation_status"] == "failed"


def test_unknown_tags_from_the_phone_are_skipped(quick_server, ca_store):
    add_phone(ca_store, "SEP00000000F00D", operation="none")
    with tls_connect(quick_server) as sock:
        request = read_message(sock)
        sock.sendall(codec.encode(Message(Command.AUTH_RESPONSE, request.session_id, (
            (0xF0, b"\x00\x0f"), (Tag.DEVICE_NAME, b"SEP00000000F00D\x00"), (14, b"??"), (Tag.VERSION, b"\x07")))))
        end = read_message(sock)
    assert end.u8(Tag.REASON) == Reason.NO_ACTION


def test_jabber_style_client(capf_server, ca_store, tmp_path):
    """Version 2, no PASSWORD, no REASON, no REQUEST_IN_PROGRESS: null string install works."""
    add_phone(ca_store, "CSFJABBERUSER", operation="install_upgrade", key_order="rsa")
    identity = phone(tmp_path, "CSFJABBERUSER")
    jabber = PhoneBehaviour(version=2, request_in_progress=False, empty_password=False, send_reason=False)
    result = run_enrol(identity, capf_server, behaviour=jabber)
    assert (result.outcome, result.key) == ("ok", "rsa2048")


def test_legacy_tls_is_opt_in_and_applies_to_the_next_session(capf_server, ca_store, tmp_path):
    old = {"maximum_version": ssl.TLSVersion.TLSv1, "minimum_version": ssl.TLSVersion.TLSv1}
    try:
        probe = tls_connect(capf_server, **old)
    except (ssl.SSLError, OSError):
        pass
    else:
        probe.close()
        pytest.fail("a TLS 1.0 client was accepted without the legacy_tls parameter")
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"legacy_tls": True})
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", capf_server.port), timeout=10))
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL build cannot do TLS 1.0 even at security level 0: {exc}")
    with sock:
        assert sock.version() == "TLSv1"
        assert read_message(sock).command == Command.AUTH_REQUEST


def test_keygen_parameters_apply_to_the_next_session(capf_server, ca_store, tmp_path):
    add_phone(ca_store, "SEP00000000AB01", operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, "SEP00000000AB01")
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"keygen_attempts": 1})
    assert run_enrol(identity, capf_server, behaviour=PhoneBehaviour(fail_keygen=1)).end_reason == 7
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"keygen_attempts": 2})
    assert run_enrol(identity, capf_server, behaviour=PhoneBehaviour(fail_keygen=1)).outcome == "ok"
    assert [row["status"] for row in certificate_rows(ca_store, "SEP00000000AB01")] == ["installed"]


def test_validity_days_applies_to_the_next_session(capf_server, ca_store, tmp_path):
    """The service keeps the parameters it read until another connection commits: a change made by
    an administrator while it runs signs the very next LSC with the new validity."""
    import datetime

    from _opencapf.ca import authority
    from _opencapf.ca import certificates as c

    add_phone(ca_store, "SEP00000000AB02", operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, "SEP00000000AB02")
    lifetimes = []
    for days in (1825, 30):
        with ca_store.transaction() as tx:
            service_records.write(tx, "test", {"validity_days": days})
        with ca_store.transaction() as tx:  # a new install/upgrade for the second round (capf_phone's reissue)
            change_phone(tx, "SEP00000000AB02", reissue=True)
        assert run_enrol(identity, capf_server).outcome == "ok"
        installed = [row for row in certificate_rows(ca_store, "SEP00000000AB02") if row["status"] == "installed"]
        lsc = c.load_pem_certificate(installed[0]["pem"])
        lifetimes.append((c.not_before(lsc), c.not_after(lsc)))
    # 1825 days would outlive the CAPF certificate made just before it (1825 days too): cut to its end.
    capf_end = c.not_after(c.load_pem_certificate(authority.current(ca_store)["pem"]))
    (first_start, first_end), (second_start, second_end) = lifetimes
    assert first_end == capf_end and first_end - first_start <= datetime.timedelta(days=1825), lifetimes
    assert second_end - second_start == datetime.timedelta(days=30), lifetimes


def test_every_server_message_arrives_whole_in_one_read(capf_server, ca_store):
    """Jabber4Linux reads each server message with one 4096-byte read and parses from byte 8 to the
    end of that read, ignoring the length field (quirk 1): each read must hold exactly one message."""
    from _opencapf.dependencies import rsa, serialization
    add_phone(ca_store, "CSFONEREAD", operation="install_upgrade", key_order="rsa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    seen = []
    with tls_connect(capf_server) as sock:
        def one_read():
            data = sock.recv(4096)
            (message,) = codec.Decoder().feed(data)  # exactly one complete message, nothing after it
            seen.append(message.command)
            return message
        request = one_read()
        sid = request.session_id
        sock.sendall(codec.encode(Message(Command.AUTH_RESPONSE, sid, (
            (Tag.VERSION, b"\x02"), (Tag.DEVICE_NAME, b"CSFONEREAD\x00"), (Tag.REASON, b"\x01")))))
        key_request = one_read()
        assert key_request.u16(Tag.KEY_SIZE) == 2048 and not key_request.has(Tag.KEY_TYPE)
        sock.sendall(codec.encode(Message(Command.KEY_GENERATE_RESPONSE, sid, ((Tag.PUBLIC_KEY, spki),))))
        store_request = one_read()
        sock.sendall(codec.encode(Message(Command.STORE_CERTIFICATE_RESPONSE, sid, ((Tag.REASON, b"\x01"),))))
        end = one_read()
    assert seen == [Command.AUTH_REQUEST, Command.KEY_GENERATE_REQUEST, Command.STORE_CERTIFICATE_REQUEST,
                    Command.END_SESSION]
    assert store_request.get(Tag.CERTIFICATE) and end.u8(Tag.REASON) == Reason.UPDATE_CERTIFICATE
    assert [row["status"] for row in certificate_rows(ca_store, "CSFONEREAD")] == ["installed"]

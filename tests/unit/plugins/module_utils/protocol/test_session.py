"""The server state machine over plain bytes, with the real store decider and the phone session.

The conversations run on both backends; the property tests over arbitrary bytes and message sequences
(hundreds of examples each, the store hardly involved) on SQLite only."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone, certificate_rows, phone_row
from support.store_phones import change_phone
from _opencapf.ca import keys
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder, Message
from _opencapf.protocol.constants import SERVER_TAGS, Command, Reason, Tag
from _opencapf.protocol.phone import PhoneBehaviour, PhoneSession
from _opencapf.protocol.session import ServerSession
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings

NAME = "SEP0011223344AA"


def converse(store, identity, behaviour=None, session_id=77):
    """Pump bytes between a ServerSession and a PhoneSession until END_SESSION; no sockets."""
    server = ServerSession(session_id, StoreDecider(store, "test"), step_timeout=5)
    phone = PhoneSession(identity, behaviour)
    now = 0.0
    to_phone = server.start(now)
    wire = [to_phone]
    while not phone.done:
        reply = phone.receive_data(to_phone)
        if phone.done:
            break
        to_phone = server.receive_data(reply, now)
        wire.append(to_phone)
    assert server.closed
    return server, phone, wire


@pytest.mark.both_backends
def test_install_over_plain_bytes(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(NAME))
    server, phone, wire = converse(ca_store, identity)
    assert phone.result.end_reason == Reason.UPDATE_CERTIFICATE
    assert server.outcome.outcome == "succeeded"
    assert [m.command for chunk in wire for m in Decoder().feed(chunk)] == [
        Command.AUTH_REQUEST, Command.KEY_GENERATE_REQUEST, Command.STORE_CERTIFICATE_REQUEST, Command.END_SESSION]
    for chunk in wire:  # quirks 1, 2 and 7: one message per write, at least one element, known tags only
        (message,) = codec.Decoder().feed(chunk)
        assert len(chunk) <= 4096 and message.elements
        assert {tag for tag, _value in message.elements} <= SERVER_TAGS
    assert [row["status"] for row in certificate_rows(ca_store, NAME)] == ["installed"]


@pytest.mark.both_backends
def test_version_2_client_gets_key_size_only_and_rsa(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec_preferred", rsa_key_size=1024)
    identity = PhoneIdentity(PhoneSettings(NAME))
    jabber = PhoneBehaviour(version=2, request_in_progress=False, empty_password=False, send_reason=False)
    server, phone, wire = converse(ca_store, identity, jabber)
    (key_request,) = Decoder().feed(wire[1])
    assert [tag for tag, _value in key_request.elements] == [Tag.KEY_SIZE]
    assert phone.result.key == "rsa1024" and server.outcome.outcome == "succeeded"


@pytest.mark.both_backends
def test_wrong_session_id_ends_with_reason_7(ca_store):
    server = ServerSession(5, StoreDecider(ca_store))
    server.start(0)
    reply = server.receive_data(codec.encode(Message(Command.AUTH_RESPONSE, 6, ((Tag.DEVICE_NAME, b"X\x00"),))), 0)
    (end,) = Decoder().feed(reply)
    assert end.command == Command.END_SESSION and end.u8(Tag.REASON) == Reason.INVALID_ELEMENT
    assert server.outcome.outcome == "protocol_error" and "session id" in server.outcome.reason


@pytest.mark.both_backends
def test_silence_ends_the_session_at_its_deadline(ca_store):
    server = ServerSession(5, StoreDecider(ca_store), step_timeout=3)
    server.start(100.0)
    assert server.time_passed(102.0) == b""
    (end,) = Decoder().feed(server.time_passed(103.0))
    assert end.u8(Tag.REASON) == Reason.INVALID_ELEMENT and server.outcome.outcome == "timeout"


@pytest.mark.both_backends
def test_keygen_failure_is_retried_up_to_the_attempts_parameter(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(NAME))
    server, phone, _wire = converse(ca_store, identity, PhoneBehaviour(fail_keygen=2))
    assert server.outcome.outcome == "succeeded"
    add_phone(ca_store, "SEP0011223344AB", operation="install_upgrade", key_order="ec")
    server, phone, _wire = converse(ca_store, PhoneIdentity(PhoneSettings("SEP0011223344AB")),
                                    PhoneBehaviour(fail_keygen=3))
    assert server.outcome.outcome == "failed" and "after 3 attempts" in server.outcome.reason
    assert phone_row(ca_store, "SEP0011223344AB")["operation_status"] == "failed"


# -- property tests: arbitrary input produces only the protocol's own outcomes ----------------

END_REASONS = {Reason.NO_ACTION, Reason.UPDATE_CERTIFICATE, Reason.INVALID_ELEMENT, Reason.UNKNOWN_DEVICE}


def _check_output(server, output: bytes):
    messages = Decoder().feed(output) if output else []
    for message in messages:
        assert message.session_id == server.session_id
        assert {tag for tag, _value in message.elements} <= SERVER_TAGS
    if server.closed and messages:
        assert messages[-1].command == Command.END_SESSION
        assert messages[-1].u8(Tag.REASON) in END_REASONS


def test_arbitrary_bytes_into_the_state_machine(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.binary(max_size=200), max_size=5))
    def run(chunks):
        server = ServerSession(9, StoreDecider(ca_store))
        server.start(0)
        for chunk in chunks:
            _check_output(server, server.receive_data(chunk, 0))

    run()


_P_COMMANDS = st.sampled_from([2, 4, 10, 12, 14, 17, 1, 15, 99])
_ELEMENT = st.one_of(
    st.tuples(st.just(Tag.DEVICE_NAME), st.sampled_from([NAME.encode() + b"\x00", b"sep0011223344aa", b"",
                                                         b"SEP000000000000\x00", b"\x00\x01", b"A" * 80])),
    st.tuples(st.just(Tag.VERSION), st.sampled_from([b"\x03", b"\x02", b"\x00", b"\x09", b"", b"\x03\x03"])),
    st.tuples(st.just(Tag.PASSWORD), st.binary(max_size=12)),
    st.tuples(st.just(Tag.REASON), st.sampled_from([b"\x01", b"\x07", b"", b"\x01\x01"])),
    st.tuples(st.just(Tag.PUBLIC_KEY), st.binary(max_size=100)),
    st.tuples(st.just(Tag.CERTIFICATE), st.binary(max_size=60)),
    st.tuples(st.just(Tag.SIGNED_DATA), st.binary(max_size=20)),
    st.tuples(st.just(Tag.SHA2_SIGNED_DATA), st.binary(max_size=20)),
    st.tuples(st.integers(0, 255), st.binary(max_size=20)),
)


@pytest.mark.parametrize("auth_mode", ["null_string", "auth_string", "existing_cert_mic"])
def test_arbitrary_message_sequences(ca_store, auth_mode):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec", auth_mode=auth_mode,
              auth_string="1234" if auth_mode == "auth_string" else None)

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(_P_COMMANDS, st.sampled_from([9, 9, 9, 8]), st.lists(_ELEMENT, max_size=5)),
                    max_size=6))
    def run(messages):
        server = ServerSession(9, StoreDecider(ca_store))
        server.start(0)
        for command, session_id, elements in messages:
            data = codec.encode(Message(command, session_id, tuple(elements)))
            _check_output(server, server.receive_data(data, 0))
        server.connection_lost()
        assert server.closed

    run()


@pytest.mark.both_backends
def test_keepalive_and_keygen_limits_bound_the_key_generation_wait(ca_store):
    from _opencapf.store import service as service_records
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"keepalive_minutes": 5, "keygen_timeout_minutes": 12})
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    server = ServerSession(3, StoreDecider(ca_store), step_timeout=10)
    server.start(0.0)
    auth = codec.encode(Message(Command.AUTH_RESPONSE, 3, ((Tag.VERSION, b"\x03"), (Tag.DEVICE_NAME, NAME.encode() + b"\x00"))))
    (request,) = Decoder().feed(server.receive_data(auth, 0.0))
    assert request.command == Command.KEY_GENERATE_REQUEST
    assert server.deadline == 300.0  # idle limit: the keep-alive timer
    in_progress = codec.encode(Message(Command.REQUEST_IN_PROGRESS, 3, ()))
    for now in (290.0, 400.0):  # REQUEST_IN_PROGRESS keeps the session alive ...
        assert server.receive_data(in_progress, now) == b""
        assert server.deadline == now + 300.0
    assert server.receive_data(in_progress, 700.0) == b""
    assert server.deadline == 720.0  # ... but never past the key-generation time limit
    (end,) = Decoder().feed(server.time_passed(720.0))
    assert end.u8(Tag.REASON) == Reason.INVALID_ELEMENT and server.outcome.outcome == "timeout"
    assert phone_row(ca_store, NAME)["operation_status"] == "failed"


@pytest.mark.both_backends
def test_keepalives_cannot_hold_a_step_open_forever(ca_store):
    server = ServerSession(4, StoreDecider(ca_store), step_timeout=2)
    server.start(0.0)
    in_progress = codec.encode(Message(Command.REQUEST_IN_PROGRESS, 4, ()))
    now = 0.0
    while server.receive_data(in_progress, now) == b"" and now < 1000:
        now += 1.5
        if server.time_passed(now):
            break
    assert server.closed and server.outcome.outcome == "timeout"
    assert now <= 12.0  # before the device is known: at most six step timeouts


def _spki(key):
    from _opencapf.dependencies import serialization
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_arbitrary_messages_after_authentication(ca_store):
    """Deeper states: a valid AUTH_RESPONSE first, then arbitrary replies (some with real keys)."""
    from _opencapf.dependencies import ec, rsa
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec_preferred", rsa_key_size=1024)
    spkis = [_spki(ec.generate_private_key(ec.SECP256R1())), _spki(rsa.generate_private_key(65537, 1024)),
             _spki(ec.generate_private_key(ec.SECP384R1()))]
    element = st.one_of(_ELEMENT, st.tuples(st.just(Tag.PUBLIC_KEY), st.sampled_from(spkis)))
    auth = ((Tag.VERSION, b"\x03"), (Tag.DEVICE_NAME, NAME.encode() + b"\x00"))

    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from([4, 4, 10, 10, 12, 14, 17, 2]), st.lists(element, max_size=4)),
                    max_size=5))
    def run(messages):
        with ca_store.transaction() as tx:
            change_phone(tx, NAME, operation="install_upgrade", reissue=True)  # armed again after an example's session
        server = ServerSession(11, StoreDecider(ca_store))
        server.start(0)
        _check_output(server, server.receive_data(codec.encode(Message(Command.AUTH_RESPONSE, 11, auth)), 0))
        assert server.state == "wait_key"
        for command, elements in messages:
            _check_output(server, server.receive_data(codec.encode(Message(command, 11, tuple(elements))), 0))
        server.connection_lost()

    run()


def test_phone_session_takes_arbitrary_server_bytes():
    from _opencapf.errors import CapfError
    from _opencapf.protocol.phone import PowerFailure

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.lists(st.one_of(
        st.binary(max_size=80),
        st.builds(lambda command, elements: codec.encode(Message(command, 5, tuple(elements))),
                  st.sampled_from([1, 3, 9, 11, 13, 15, 16, 99]), st.lists(_ELEMENT, max_size=4))), max_size=5))
    def run(chunks):
        identity = PhoneIdentity(PhoneSettings(NAME), key_factory=lambda kind, size: keys.generate("ec256"))
        phone = PhoneSession(identity, PhoneBehaviour())
        try:
            for chunk in chunks:
                phone.receive_data(chunk)
        except (CapfError, PowerFailure):
            pass

    run()


@pytest.mark.parametrize("auth_mode", ["existing_cert_mic", "existing_cert_lsc"])
def test_a_malformed_certificate_element_ends_the_session_with_its_plan_known(ca_store, auth_mode):
    """The certificate is checked in the read that finds the phone; a CERTIFICATE element that does
    not parse still ends the session at authentication, its device and operation on record."""
    add_phone(ca_store, NAME, operation="install_upgrade", auth_mode=auth_mode)
    server = ServerSession(12, StoreDecider(ca_store, "test"), step_timeout=5)
    server.start(0.0)
    auth = codec.encode(Message(Command.AUTH_RESPONSE, 12, (
        (Tag.VERSION, codec.u8(3)), (Tag.DEVICE_NAME, codec.cstring(NAME)), (Tag.CERTIFICATE, b"\x01\x02\x03"))))
    (end,) = Decoder().feed(server.receive_data(auth, 0.0))
    assert end.command == Command.END_SESSION and server.outcome.outcome == "protocol_error"
    assert (server.outcome.device_name, server.outcome.operation) == (NAME, "install_upgrade")
    assert phone_row(ca_store, NAME)["operation_status"] == "pending"  # nothing started, nothing to settle

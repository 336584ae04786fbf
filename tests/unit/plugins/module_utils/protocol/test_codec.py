"""The CAPF message codec: exact bytes, strict lengths, incremental decoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder, Message, ProtocolError
from _opencapf.protocol.constants import Command, Tag


def test_auth_request_matches_the_reference_bytes():
    message = Message(Command.AUTH_REQUEST, 1, ((Tag.VERSION, b"\x03"), (Tag.AUTH_TYPE, b"\x00")))
    assert codec.encode(message) == bytes.fromhex("55 01 00000001 0008 07 0001 03 08 0001 00".replace(" ", ""))


def test_decode_round_trip_keeps_order_and_unknown_tags():
    message = Message(Command.AUTH_RESPONSE, 0xDEADBEEF, ((13, b"SEP1\x00"), (0xF0, b"\x00\x01"), (7, b"\x02")))
    assert codec.decode(codec.encode(message)) == message


@pytest.mark.parametrize("data, rule", [
    (b"\x56\x01\x00\x00\x00\x01\x00\x00", "protocol id"),
    (b"\x55\x01\x00\x00\x00\x01\x00\x05\x07\x00\x01\x03", "body length"),
    (b"\x55\x01\x00\x00\x00\x01\x00\x02\x07\x00", "truncated"),
    (b"\x55\x01\x00\x00\x00\x01\x00\x04\x07\x00\x09\x03", "claims 9 bytes"),
])
def test_malformed_messages_name_the_rule(data, rule):
    with pytest.raises(ProtocolError, match=rule):
        codec.decode(data)


def test_decoder_buffers_until_header_and_body_are_complete():
    data = codec.encode(Message(Command.END_SESSION, 7, ((Tag.REASON, b"\x01"),))) * 2
    decoder = Decoder()
    messages = []
    for byte in data:
        messages += decoder.feed(bytes([byte]))
    assert [m.command for m in messages] == [Command.END_SESSION, Command.END_SESSION]
    assert decoder.pending == 0


def test_decoder_refuses_oversize_body_before_it_arrives():
    decoder = Decoder(max_body=100)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(b"\x55\x02\x00\x00\x00\x01\x01\x00")


def test_decoder_refuses_non_capf_bytes_at_once():
    with pytest.raises(ProtocolError, match="not a CAPF peer"):
        Decoder().feed(b"\x16\x03\x01")


def test_server_messages_are_limited_to_4096_bytes():
    big = Message(Command.STORE_CERTIFICATE_REQUEST, 1, ((Tag.CERTIFICATE, b"x" * 4090),))
    with pytest.raises(ProtocolError, match="at most 4096"):
        codec.encode_server(big)


def test_certificate_wrapper_layout_and_several_entries():
    wrapped = codec.wrap_certificate(b"\x30\x03abc", 2)
    assert wrapped == b"\x01\x00\x07\x00\x02\x30\x03abc"
    both = codec.wrap_certificates([(1, b"\x30\x01L"), (2, b"\x30\x01M")])
    assert codec.unwrap_certificates(both) == [(1, b"\x30\x01L"), (2, b"\x30\x01M")]


def test_certificate_wrapper_falls_back_to_offset_five():
    broken = b"\x01\xff\xff\x00\x01" + b"\x30\x01X"
    assert codec.unwrap_certificates(broken) == [(1, b"\x30\x01X")]


def test_sha2_signed_data():
    value = codec.encode_sha2_signature(b"sig", 3)
    assert value == b"\x03\x00\x03sig"
    assert codec.decode_sha2_signature(value) == (3, b"sig")
    with pytest.raises(ProtocolError):
        codec.decode_sha2_signature(b"\x03\x00\x05sig")


def test_element_width_checks():
    message = Message(Command.AUTH_RESPONSE, 1, ((Tag.VERSION, b"\x03\x00"),))
    with pytest.raises(ProtocolError, match="VERSION must be 1 byte"):
        message.u8(Tag.VERSION)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_only_raise_protocol_errors(data, chunk):
    decoder = Decoder()
    try:
        for start in range(0, len(data), chunk):
            for message in decoder.feed(data[start:start + chunk]):
                assert isinstance(message, Message)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 255), st.integers(0, 0xFFFFFFFF),
       st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8))
def test_any_message_round_trips(command, session_id, elements):
    message = Message(command, session_id, tuple(elements))
    assert codec.decode(codec.encode(message)) == message

"""PUBLIC_KEY parsing: strict SPKI, plus the repair of Jabber's missing unused-bits octet."""

from __future__ import annotations

import pytest

from _opencapf.dependencies import ec, rsa, serialization
from _opencapf.protocol.codec import ProtocolError
from _opencapf.server.decider import load_phone_key


def _spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_standard_spki():
    key = ec.generate_private_key(ec.SECP256R1())
    assert load_phone_key(_spki(key)).public_numbers() == key.public_key().public_numbers()


def test_jabber_bit_string_without_unused_bits_octet_is_repaired():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    good = _spki(key)
    # SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { 00, RSAPublicKey } }: drop the 00.
    algorithm = good[3:3 + 15]
    bits_content = good[3 + 15 + 3 + 1:]
    broken_bits = b"\x03\x81" + bytes((len(bits_content),)) + bits_content
    body = algorithm + broken_bits
    broken = b"\x30\x81" + bytes((len(body),)) + body
    assert len(broken) == len(good) - 1
    assert load_phone_key(broken).public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"\x30\x05\x30\x03\x03\x01\x30", b"junk" * 10])
def test_garbage_is_a_protocol_error(data):
    with pytest.raises(ProtocolError, match="PUBLIC_KEY"):
        load_phone_key(data)

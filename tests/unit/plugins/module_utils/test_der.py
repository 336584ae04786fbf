"""The hand-written DER encoder and reader, checked against known encodings and openssl."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from _opencapf import der
from support.tools import openssl


@pytest.mark.parametrize("value, encoded", [
    (0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100"), (-1, "0201ff"), (-128, "020180"),
    (-129, "0202ff7f"),
])
def test_integers(value, encoded):
    assert der.integer(value).hex() == encoded
    assert der.read_integer(der.read_one(der.integer(value))) == value


@given(st.integers(min_value=-(2 ** 200), max_value=2 ** 200))
def test_integer_round_trip(value):
    assert der.read_integer(der.read_one(der.integer(value))) == value


@pytest.mark.parametrize("dotted, encoded", [
    ("1.2.840.113549.1.1.11", "06092a864886f70d01010b"),
    ("2.5.29.15", "0603551d0f"),
    ("1.2.840.10045.4.3.2", "06082a8648ce3d040302"),
    ("2.999.3", "0603883703"),
])
def test_object_identifiers(dotted, encoded):
    assert der.oid(dotted).hex() == encoded
    assert der.read_oid(der.read_one(der.oid(dotted))) == dotted


@pytest.mark.parametrize("dotted", ["1", "3.1", "1.40", "1.2.x"])
def test_invalid_object_identifiers(dotted):
    with pytest.raises(der.DerError):
        der.oid(dotted)


@pytest.mark.parametrize("size, header", [(0, "0400"), (127, "047f"), (128, "048180"), (300, "0482012c"),
                                          (70000, "048301" + "1170")])
def test_length_forms(size, header):
    assert der.octet_string(b"\x00" * size).hex().startswith(header)


def test_simple_types():
    assert der.null().hex() == "0500"
    assert der.boolean(True).hex() == "0101ff" and der.boolean(False).hex() == "010100"
    assert der.bit_string(b"\xab").hex() == "030200ab"
    assert der.context(0, b"").hex() == "a000"
    assert der.set_of(der.integer(2), der.integer(1)).hex() == "3106020101020102"


def test_openssl_parses_a_nested_structure():
    encoded = der.sequence(der.integer(5), der.oid("2.5.4.3"), der.set_of(der.octet_string(b"x"), der.null()),
                           der.context(0, der.boolean(True)))
    text = openssl("asn1parse", "-inform", "DER", input_bytes=encoded).stdout.decode()
    assert "INTEGER" in text and ":commonName" in text and "OCTET STRING" in text and "cont [ 0 ]" in text


@pytest.mark.parametrize("data, message", [
    (b"\x30", "truncated"),
    (b"\x30\x80\x00\x00", "indefinite"),
    (b"\x04\x81\x05hello", "shortest form"),
    (b"\x04\x05hel", "runs past"),
    (b"\x05\x00\x00", "unexpected bytes"),
    (b"\x1f\x01\x00", "multi-byte tag"),
])
def test_reader_is_strict(data, message):
    with pytest.raises(der.DerError, match=message):
        der.read_one(data)


def test_children_of_a_primitive_are_refused():
    with pytest.raises(der.DerError, match="not constructed"):
        der.children(der.read_one(der.integer(1)))

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few DER types a PKCS#10 request needs, encoded and read by hand.

``cryptography`` cannot sign a request with a signature made elsewhere (the phone's), so the
CertificationRequestInfo and the final request are assembled here. Only definite lengths, only the
types listed; the reader is strict (minimal lengths, no trailing bytes) because it parses input
from the network.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .errors import CapfError

BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
SET = 0x31


def pem(label: str, data: bytes) -> str:
    """``data`` in PEM armour under ``label`` (RFC 7468: base64 in lines of 64 characters, each ended
    by a line feed), as OpenSSL and the cryptography library write it."""
    text = base64.b64encode(data).decode("ascii")
    lines = "".join(text[start:start + 64] + "\n" for start in range(0, len(text), 64))
    return f"-----BEGIN {label}-----\n{lines}-----END {label}-----\n"


class DerError(CapfError, ValueError):
    """Bytes that are not the DER this module expects."""


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One element: tag, definite length, value."""
    return bytes([tag]) + _length(len(value)) + bytes(value)


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """SET OF in DER order (elements sorted by their encodings)."""
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def null() -> bytes:
    return tlv(NULL, b"")


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    """A BIT STRING of whole octets (no unused bits)."""
    return tlv(BIT_STRING, b"\x00" + bytes(value))


def oid(dotted: str) -> bytes:
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise DerError(f"object identifier {dotted!r} must be dotted decimal") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or min(arcs) < 0:
        raise DerError(f"object identifier {dotted!r} is not valid")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(body))


def context(number: int, value: bytes, constructed: bool = True) -> bytes:
    """An IMPLICIT context-specific tag ``[number]`` around ``value`` (the contents, untagged)."""
    if not 0 <= number <= 30:
        raise DerError("context tag numbers above 30 are not supported")
    return tlv((0xA0 if constructed else 0x80) | number, value)


@dataclass(frozen=True)
class Element:
    """One parsed element: its tag, its contents, and the whole encoding."""

    tag: int
    value: bytes
    encoded: bytes


def read(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """The element at ``offset`` and the offset just after it."""
    data = bytes(data)
    if offset + 2 > len(data):
        raise DerError("DER element is truncated (no tag and length)")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("DER element uses a multi-byte tag, which is not expected here")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        size = first
    elif first == 0x80:
        raise DerError("DER element uses an indefinite length (BER, not DER)")
    else:
        count = first & 0x7F
        if count > 4 or position + count > len(data):
            raise DerError("DER length is truncated or too large")
        size = int.from_bytes(data[position:position + count], "big")
        if size < 0x80 or data[position] == 0:
            raise DerError("DER length is not in its shortest form")
        position += count
    end = position + size
    if end > len(data):
        raise DerError(f"DER element of {size} bytes runs past the end of the data")
    return Element(tag, data[position:end], data[offset:end]), end


def read_one(data: bytes, expected_tag: int | None = None) -> Element:
    """Exactly one element filling ``data``."""
    element, end = read(data)
    if end != len(data):
        raise DerError(f"{len(data) - end} unexpected bytes after the DER element")
    if expected_tag is not None and element.tag != expected_tag:
        raise DerError(f"DER element has tag 0x{element.tag:02x}, expected 0x{expected_tag:02x}")
    return element


def children(element: Element) -> list[Element]:
    """The elements inside a constructed element, in order."""
    if not element.tag & 0x20:
        raise DerError(f"DER element with tag 0x{element.tag:02x} is not constructed")
    items, offset = [], 0
    while offset < len(element.value):
        item, offset = read(element.value, offset)
        items.append(item)
    return items


def read_oid(element: Element) -> str:
    if element.tag != OBJECT_IDENTIFIER or not element.value or element.value[-1] & 0x80:
        raise DerError("DER element is not an object identifier")
    arcs, current = [], 0
    for byte in element.value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def read_integer(element: Element) -> int:
    if element.tag != INTEGER or not element.value:
        raise DerError("DER element is not an integer")
    return int.from_bytes(element.value, "big", signed=True)

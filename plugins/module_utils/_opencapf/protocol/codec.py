# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CAPF messages as bytes: header, TLV elements, the certificate wrapper, strict length checks.

Nothing here touches a socket, a clock or the store. ``Decoder`` buffers a byte stream until a
header and its whole body have arrived, so it works with any split of the stream into reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import CapfError
from .constants import HEADER_SIZE, MAX_BODY, MAX_SERVER_MESSAGE, PROTOCOL_ID, CertificateType, Command, Tag

_HEADER = struct.Struct(">BBIH")
_ELEMENT = struct.Struct(">BH")


class ProtocolError(CapfError):
    """The peer broke the wire format or the conversation rules; the session ends with reason 7."""

    def __init__(self, rule: str, reason: int = 7):
        super().__init__(rule)
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One CAPF message. ``elements`` keeps every (tag, value) pair in wire order."""

    command: int
    session_id: int
    elements: tuple = field(default_factory=tuple)

    def get(self, tag: int) -> bytes | None:
        """The value of the first element with ``tag``, or None."""
        for item_tag, value in self.elements:
            if item_tag == tag:
                return value
        return None

    def has(self, tag: int) -> bool:
        return any(item_tag == tag for item_tag, _value in self.elements)

    def u8(self, tag: int) -> int | None:
        value = self.get(tag)
        if value is None:
            return None
        if len(value) != 1:
            raise ProtocolError(f"element {_tag_name(tag)} must be 1 byte long, got {len(value)}")
        return value[0]

    def u16(self, tag: int) -> int | None:
        value = self.get(tag)
        if value is None:
            return None
        if len(value) != 2:
            raise ProtocolError(f"element {_tag_name(tag)} must be 2 bytes long, got {len(value)}")
        return struct.unpack(">H", value)[0]

    def text(self, tag: int) -> bytes | None:
        """A NUL-terminated string element without its final NUL (raw bytes)."""
        value = self.get(tag)
        if value is None:
            return None
        return value[:-1] if value.endswith(b"\x00") else value

    @property
    def name(self) -> str:
        return command_name(self.command)


def command_name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return f"command {command}"


def _tag_name(tag: int) -> str:
    try:
        return Tag(tag).name
    except ValueError:
        return f"tag {tag}"


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def cstring(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return value + b"\x00"


def encode_body(elements) -> bytes:
    parts = []
    for tag, value in elements:
        value = bytes(value)
        if not 0 <= tag <= 0xFF:
            raise ProtocolError(f"element tag must be 0-255, got {tag}")
        if len(value) > MAX_BODY - _ELEMENT.size:
            raise ProtocolError(f"element {_tag_name(tag)} value must be at most {MAX_BODY - 3} bytes")
        parts.append(_ELEMENT.pack(tag, len(value)) + value)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ProtocolError(f"message body must be at most {MAX_BODY} bytes, got {len(body)}")
    return body


def encode(message: Message, limit: int | None = None) -> bytes:
    """The wire form of ``message``; ``limit`` bounds the whole message (server side: 4096)."""
    body = encode_body(message.elements)
    data = _HEADER.pack(PROTOCOL_ID, message.command, message.session_id & 0xFFFFFFFF, len(body)) + body
    if limit is not None and len(data) > limit:
        raise ProtocolError(f"message {message.name} would be {len(data)} bytes; at most {limit} may be sent")
    return data


def encode_server(message: Message) -> bytes:
    return encode(message, MAX_SERVER_MESSAGE)


def decode_body(body: bytes) -> tuple:
    """Split a body into (tag, value) pairs, checking that every length fits the data."""
    elements = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _ELEMENT.size:
            raise ProtocolError(f"element header at offset {offset} is truncated")
        tag, length = _ELEMENT.unpack_from(body, offset)
        offset += _ELEMENT.size
        if length > len(body) - offset:
            raise ProtocolError(f"element {_tag_name(tag)} claims {length} bytes but only {len(body) - offset} remain")
        elements.append((tag, bytes(body[offset:offset + length])))
        offset += length
    return tuple(elements)


def decode_header(header: bytes) -> tuple[int, int, int]:
    """(command, session id, body length) from 8 header bytes."""
    protocol, command, session_id, length = _HEADER.unpack(header)
    if protocol != PROTOCOL_ID:
        raise ProtocolError(f"protocol id must be 0x55, got 0x{protocol:02x} (not a CAPF peer)")
    return command, session_id, length


def decode(data: bytes) -> Message:
    """Exactly one message from ``data``."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"message must be at least {HEADER_SIZE} bytes, got {len(data)}")
    command, session_id, length = decode_header(bytes(data[:HEADER_SIZE]))
    if len(data) != HEADER_SIZE + length:
        raise ProtocolError(f"body length field says {length} bytes but {len(data) - HEADER_SIZE} follow")
    return Message(command, session_id, decode_body(bytes(data[HEADER_SIZE:])))


class Decoder:
    """Incremental decoder: feed bytes, get complete messages."""

    def __init__(self, max_body: int = MAX_BODY):
        self._buffer = bytearray()
        self.max_body = max_body

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER_SIZE:
            command, session_id, length = decode_header(bytes(self._buffer[:HEADER_SIZE]))
            if length > self.max_body:
                raise ProtocolError(f"message body of {length} bytes exceeds the limit of {self.max_body}")
            if len(self._buffer) < HEADER_SIZE + length:
                break
            body = bytes(self._buffer[HEADER_SIZE:HEADER_SIZE + length])
            del self._buffer[:HEADER_SIZE + length]
            messages.append(Message(command, session_id, decode_body(body)))
        if len(self._buffer) >= 1 and self._buffer[0] != PROTOCOL_ID:
            raise ProtocolError(f"protocol id must be 0x55, got 0x{self._buffer[0]:02x} (not a CAPF peer)")
        return messages

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def copy(self) -> "Decoder":
        """A decoder holding the bytes this one holds: this one's state, to go back to."""
        twin = Decoder(self.max_body)
        twin._buffer = bytearray(self._buffer)  # pylint: disable=protected-access
        return twin


# Certificate wrapper (value of the CERTIFICATE element): entries of tag 01, u16 length, 00, type, DER.

def wrap_certificate(der: bytes, certificate_type: int = CertificateType.LSC) -> bytes:
    return wrap_certificates([(certificate_type, der)])


def wrap_certificates(entries) -> bytes:
    parts = []
    for certificate_type, der in entries:
        parts.append(b"\x01" + u16(len(der) + 2) + b"\x00" + u8(int(certificate_type)) + bytes(der))
    return b"".join(parts)


def unwrap_certificates(value: bytes) -> list[tuple[int, bytes]]:
    """(type byte, DER) for each wrapper entry; falls back to "everything after byte 5"."""
    entries = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 5 or value[offset] != 1:
            break
        length = struct.unpack(">H", value[offset + 1:offset + 3])[0]
        if length < 2 or length > len(value) - offset - 3:
            break
        entries.append((value[offset + 4], bytes(value[offset + 5:offset + 3 + length])))
        offset += 3 + length
    else:
        if entries:
            return entries
    if len(value) > 5:
        return [(value[4], bytes(value[5:]))]
    raise ProtocolError("CERTIFICATE element holds no certificate")


def encode_sha2_signature(signature: bytes, hash_code: int = 3) -> bytes:
    return u8(hash_code) + u16(len(signature)) + signature


def decode_sha2_signature(value: bytes) -> tuple[int, bytes]:
    if len(value) < 3:
        raise ProtocolError("SHA2_SIGNED_DATA must hold a hash code, a length and a signature")
    length = struct.unpack(">H", value[1:3])[0]
    if length != len(value) - 3:
        raise ProtocolError(f"SHA2_SIGNED_DATA length field says {length} bytes but {len(value) - 3} follow")
    return value[0], bytes(value[3:])

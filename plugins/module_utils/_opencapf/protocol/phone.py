# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The phone side of one CAPF session, sans-I/O (used by the simulator).

``PhoneSession`` consumes the server's bytes and returns the phone's replies. What a phone
holds (MIC, LSC, keys) and does (generate a key, store or delete its LSC) comes from a
``Handset`` object, so the same conversation serves the on-disk simulator and plain-bytes tests.
Behaviour switches reproduce the public clients' quirks: capfc's REQUEST_IN_PROGRESS and empty
PASSWORD, Jabber's VERSION 2 and missing PASSWORD.
"""

from __future__ import annotations

import abc

from dataclasses import dataclass, field

from .. import csr as csr_module
from ..dependencies import serialization
from ..errors import CapfError
from .codec import Decoder, Message, ProtocolError, cstring, encode, encode_sha2_signature, u8, u16
from .codec import unwrap_certificates, wrap_certificates
from .constants import CURVE_BITS, RSA_SIZES, XCAP_PENDING_KEY, CertificateType, Command, Curve, KeyType, Reason, Tag
from . import proof


@dataclass
class PhoneBehaviour:
    version: int = 3
    request_in_progress: bool = True  # capfc and real phones (RSA); Jabber never
    empty_password: bool = True  # capfc sends a lone 00 PASSWORD in null-string mode
    send_reason: bool = True
    ec_capable: bool = True
    fail_keygen: int = 0  # answer this many KEY_GENERATE_REQUESTs with a failure first
    power_failure_at: str = ""  # "key" (before answering KEY_GENERATE) or "store" (before storing)
    x_caps: int = 0  # X-CSR/1 capability bits to advertise (0: send no X_CAPS, as real phones)
    refuse_sign: bool = False  # answer ENCRYPT_REQUEST with REASON 7


@dataclass
class PhoneResult:
    end_reason: int | None = None
    operation: str = ""  # what the server asked: install / delete / fetch / none
    stored: bool = False
    deleted: bool = False
    fetched: int = 0
    key: str = ""
    power_failure: bool = False
    signed_csr: bool = False
    retry_delay: int | None = None  # RETRY_LATER received (seconds)
    events: list = field(default_factory=list)


class PowerFailure(Exception):
    """The simulated phone lost power mid-session."""


class Handset(abc.ABC):
    """What the phone holds and does; the simulator stores it on disk."""

    device_name: str = ""
    auth_mode: str = "null_string"
    auth_string: str = ""

    def presented_certificate(self):  # (certificate DER, private key) or None
        return None

    @abc.abstractmethod
    def generate_key(self, kind: str, size: int):  # a private key
        """Implemented by the driver."""

    @abc.abstractmethod
    def store_lsc(self, der: bytes, private_key) -> bool:
        """Implemented by the driver."""

    def certificates_for_fetch(self) -> list:  # [(type, der)]
        return []

    def delete_lsc(self) -> bool:
        return False

    # X-CSR/1 bit 2: a key whose certificate comes in a later session.
    def pending_key(self):
        return None

    @abc.abstractmethod
    def keep_pending_key(self, private_key) -> None:
        """Implemented by the driver."""


class PhoneSession:
    def __init__(self, handset: Handset, behaviour: PhoneBehaviour | None = None):
        self.handset = handset
        self.behaviour = behaviour or PhoneBehaviour()
        self.result = PhoneResult()
        self.session_id: int | None = None
        self.done = False
        self._decoder = Decoder()
        self._new_key = None
        self._keygen_failures = 0

    def receive_data(self, data: bytes) -> bytes:
        out = []
        for message in self._decoder.feed(data):
            if self.done:
                raise ProtocolError(f"server sent {message.name} after END_SESSION")
            out.append(self._handle(message))
        return b"".join(out)

    def _send(self, command: int, elements) -> bytes:
        return encode(Message(command, self.session_id, tuple(elements)))

    def _handle(self, message: Message) -> bytes:
        if self.session_id is None:
            self.session_id = message.session_id
        elif message.session_id != self.session_id:
            raise ProtocolError(f"server changed the session id from {self.session_id} to {message.session_id}")
        self.result.events.append(message.name)
        handler = {
            Command.AUTH_REQUEST: self._on_auth,
            Command.KEY_GENERATE_REQUEST: self._on_keygen,
            Command.STORE_CERTIFICATE_REQUEST: self._on_store,
            Command.FETCH_CERTIFICATE_REQUEST: self._on_fetch,
            Command.DELETE_CERTIFICATE_REQUEST: self._on_delete,
            Command.END_SESSION: self._on_end,
            Command.ENCRYPT_REQUEST: self._on_sign,
            Command.RETRY_LATER: self._on_retry_later,
        }.get(message.command)
        if handler is None:
            raise ProtocolError(f"unexpected {message.name} from the server")
        return handler(message)

    def _on_auth(self, message: Message) -> bytes:
        handset = self.handset
        elements = [(Tag.VERSION, u8(self.behaviour.version)), (Tag.DEVICE_NAME, cstring(handset.device_name))]
        if self.behaviour.send_reason:
            elements.append((Tag.REASON, u8(Reason.UPDATE_CERTIFICATE)))
        mode = handset.auth_mode
        if mode == "auth_string":
            elements.append((Tag.PASSWORD, cstring(handset.auth_string)))
        elif self.behaviour.empty_password:
            elements.append((Tag.PASSWORD, b"\x00"))
        if self.behaviour.x_caps:
            elements.append((Tag.X_CAPS, u16(self.behaviour.x_caps)))
        if mode in ("existing_cert_lsc", "existing_cert_mic"):
            presented = handset.presented_certificate()
            if presented is not None:
                der, key = presented
                data = proof.message(handset.device_name.encode("ascii"), der)
                elements += [
                    (Tag.CERTIFICATE, wrap_certificates([(CertificateType.LSC, der)])),
                    (Tag.SIGNED_DATA, proof.sign(key, data, "sha1")),
                    (Tag.SHA2_SIGNED_DATA, encode_sha2_signature(proof.sign(key, data, "sha512"), 3)),
                ]
        return self._send(Command.AUTH_RESPONSE, elements)

    def _on_keygen(self, message: Message) -> bytes:
        self.result.operation = "install"
        key_type = message.u8(Tag.KEY_TYPE)
        if key_type is None or key_type == KeyType.RSA:
            kind, size = "rsa", message.u16(Tag.KEY_SIZE) or 2048
            if size not in RSA_SIZES:
                raise ProtocolError(f"KEY_SIZE must be one of {', '.join(map(str, RSA_SIZES))}, got {size}")
        elif key_type == KeyType.EC:
            curve = message.u8(Tag.CURVE)
            if curve not in CURVE_BITS:
                raise ProtocolError(f"CURVE must be 0-2, got {curve}")
            kind, size = "ec", CURVE_BITS[Curve(curve)]
        else:
            raise ProtocolError(f"KEY_TYPE must be 0 or 1, got {key_type}")
        if self.behaviour.power_failure_at == "key":
            self.result.power_failure = True
            raise PowerFailure("power lost while generating the key")
        if (kind == "ec" and not self.behaviour.ec_capable) or self._keygen_failures < self.behaviour.fail_keygen:
            self._keygen_failures += 1
            return self._send(Command.KEY_GENERATE_RESPONSE, [(Tag.REASON, u8(Reason.INVALID_ELEMENT))])
        try:
            self._new_key = self.handset.generate_key(kind, size)
        except ValueError:  # e.g. RSA-512, which this phone's crypto library refuses to make
            return self._send(Command.KEY_GENERATE_RESPONSE, [(Tag.REASON, u8(Reason.INVALID_ELEMENT))])
        self.result.key = f"{kind}{size}"
        spki = self._new_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        prefix = b""
        if self.behaviour.request_in_progress:
            prefix = self._send(Command.REQUEST_IN_PROGRESS, [])
        return prefix + self._send(Command.KEY_GENERATE_RESPONSE, [(Tag.PUBLIC_KEY, spki)])

    def _on_store(self, message: Message) -> bytes:
        if self.behaviour.power_failure_at == "store":
            self.result.power_failure = True
            raise PowerFailure("power lost before the certificate was stored")
        value = message.get(Tag.CERTIFICATE)
        ok = False
        key = self._new_key
        if key is None and self.behaviour.x_caps & XCAP_PENDING_KEY:
            key = self.handset.pending_key()
        if value and key is not None:
            _type, der = unwrap_certificates(value)[0]
            ok = self.handset.store_lsc(der, key)
        self.result.stored = ok
        return self._send(Command.STORE_CERTIFICATE_RESPONSE,
                          [(Tag.REASON, u8(Reason.UPDATE_CERTIFICATE if ok else Reason.INVALID_ELEMENT))])

    def _on_fetch(self, message: Message) -> bytes:
        self.result.operation = "fetch"
        entries = self.handset.certificates_for_fetch()
        self.result.fetched = len(entries)
        if not entries:
            return self._send(Command.FETCH_CERTIFICATE_RESPONSE, [(Tag.REASON, u8(Reason.INVALID_ELEMENT))])
        return self._send(Command.FETCH_CERTIFICATE_RESPONSE,
                          [(Tag.REASON, u8(Reason.UPDATE_CERTIFICATE)), (Tag.CERTIFICATE, wrap_certificates(entries))])

    def _on_delete(self, message: Message) -> bytes:
        self.result.operation = "delete"
        ok = self.handset.delete_lsc()
        self.result.deleted = ok
        return self._send(Command.DELETE_CERTIFICATE_RESPONSE,
                          [(Tag.REASON, u8(Reason.UPDATE_CERTIFICATE if ok else Reason.INVALID_ELEMENT))])

    def _on_sign(self, message: Message) -> bytes:
        """X-CSR/1 step 6: sign X_TBS with the key generated in this session, after checking it."""
        if not self.behaviour.x_caps:
            raise ProtocolError("unexpected ENCRYPT_REQUEST: X_CAPS was not advertised")
        info = message.get(Tag.X_TBS)
        try:
            if self._new_key is None or info is None or self.behaviour.refuse_sign:
                raise csr_module.CsrError("no key generated in this session, no X_TBS, or signing disabled")
            signature = csr_module.phone_sign(info, self._new_key, message.u8(Tag.DIGEST_TYPE),
                                              message.u8(Tag.KEY_TYPE))
        except CapfError as exc:
            return self._send(Command.ENCRYPT_RESPONSE, [(Tag.REASON, u8(Reason.INVALID_ELEMENT)),
                                                         (Tag.REASON_INFO, cstring(str(exc)[:200]))])
        self.result.signed_csr = True
        if self.behaviour.x_caps & XCAP_PENDING_KEY:
            self.handset.keep_pending_key(self._new_key)
        return self._send(Command.ENCRYPT_RESPONSE, [(Tag.REASON, u8(Reason.UPDATE_CERTIFICATE)),
                                                     (Tag.SIGNED_DATA, signature)])

    def _on_retry_later(self, message: Message) -> bytes:
        value = message.get(Tag.RETRY_DELAY) or b""
        self.result.retry_delay = int.from_bytes(value, "big") if len(value) in (2, 4) else 0
        self.done = True
        return b""

    def _on_end(self, message: Message) -> bytes:
        self.result.end_reason = message.u8(Tag.REASON)
        self.done = True
        return b""

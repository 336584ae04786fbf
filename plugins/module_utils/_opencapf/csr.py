# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PKCS#10 requests signed by the phone's own key (the "X-CSR/1" extension, capf-protocol.md 6.3).

The server side builds the CertificationRequestInfo around the phone's SPKI (``prepare``), sends it
to the phone, and turns the phone's signature into a request (``assemble``), which is verified
with the request's own key before anything else sees it: a request is never signed with another
key. The phone side (``phone_sign``) checks that the request carries the key generated in this
session before it signs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import der
from .ca import certificates as c
from .ca import keys
from .ca.lsc import lsc_extensions, lsc_subject
from .dependencies import InvalidSignature, ec, hashes, padding, require, serialization, x509, NameOID
from .errors import CapfError, CertificateError, ValidationError

# DIGEST_TYPE codes on the wire (capf-protocol.md 2.4); SHA-1 (1) is refused.
DIGEST_CODES = {"sha256": 2, "sha512": 3}
KEY_TYPE_CODES = {"rsa": 0, "ec": 1}
_DIGEST_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha512": "2.16.840.1.101.3.4.2.3"}
_SIGNATURE_OIDS = {
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",
    ("rsa", "sha512"): "1.2.840.113549.1.1.13",
    ("ec", "sha256"): "1.2.840.10045.4.3.2",
    ("ec", "sha512"): "1.2.840.10045.4.3.4",
}
_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
MAX_SIGNATURE_BYTES = 1024


class CsrError(CapfError):
    """A request cannot be built, signed or assembled; the message says why."""


def check_digest(value, field: str = "digest") -> str:
    """``sha256`` (default) or ``sha512``, by name or wire code; SHA-1 is refused."""
    if value is None:
        return "sha256"
    names = {code: name for name, code in DIGEST_CODES.items()}
    name = names.get(value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(name, str) and name.lower().replace("-", "") in DIGEST_CODES:
        return name.lower().replace("-", "")
    raise ValidationError(field, "must be sha256 or sha512 (wire codes 2 or 3; SHA-1 is refused)", value)


def _hash(name: str):
    return hashes.SHA256() if name == "sha256" else hashes.SHA512()


@dataclass(frozen=True)
class CsrRequest:
    """A CertificationRequestInfo waiting for the phone's signature."""

    device_name: str
    key_type: str
    digest: str
    spki: bytes
    info: bytes
    to_sign: bytes

    @property
    def key_type_code(self) -> int:
        return KEY_TYPE_CODES[self.key_type]

    @property
    def digest_code(self) -> int:
        return DIGEST_CODES[self.digest]


@dataclass(frozen=True)
class SignedCsr:
    """A verified PKCS#10 request."""

    device_name: str
    der: bytes
    csr: object

    @property
    def pem(self) -> str:
        return to_pem(self.der)

    @property
    def public_key_fingerprint(self) -> str:
        return c.public_key_fingerprint(self.csr.public_key())


def _spki_and_key(public_key):
    """The SPKI bytes exactly as given (bytes) or as encoded (key object), and the key object."""
    if isinstance(public_key, (bytes, bytearray, memoryview)):
        spki = bytes(public_key)
        try:
            der.read_one(spki, der.SEQUENCE)
        except der.DerError as exc:
            raise CertificateError(f"public_key is not a DER SubjectPublicKeyInfo: {exc}") from None
        return spki, c.load_public_key(spki, "public_key")
    return c.public_key_der(public_key), public_key


def _extension_request(device_name: str, public_key) -> bytes:
    extensions = []
    for extension, critical in lsc_extensions(device_name, public_key):
        parts = [der.oid(extension.oid.dotted_string)]
        if critical:
            parts.append(der.boolean(True))
        parts.append(der.octet_string(extension.public_bytes()))
        extensions.append(der.sequence(*parts))
    return der.sequence(der.oid(_EXTENSION_REQUEST), der.set_of(der.sequence(*extensions)))


def build_request_info(device_name: str, public_key, subject_from=None) -> bytes:
    """DER CertificationRequestInfo: version 0, CN = device name plus the O/OU/L/ST/C of
    ``subject_from`` (an x509.Name, e.g. the issuing CA's subject), the SPKI byte for byte, and an
    extensionRequest with the LSC extensions."""
    require("cryptography")
    spki, key = _spki_and_key(public_key)
    keys.check_phone_public_key(key)
    if subject_from is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_name)])
    else:
        subject = lsc_subject(device_name, subject_from)
    return der.sequence(
        der.integer(0), subject.public_bytes(), spki,
        der.context(0, _extension_request(device_name, key)),
    )


def digest_info(message: bytes, digest: str) -> bytes:
    """DER DigestInfo of ``message``: what an RSA signer pads (PKCS#1 v1.5) and raises to d."""
    hashed = hashlib.new(digest, message).digest()
    return der.sequence(der.sequence(der.oid(_DIGEST_OIDS[digest]), der.null()), der.octet_string(hashed))


def prepare(device_name: str, public_key, *, subject_from=None, digest="sha256") -> CsrRequest:
    """Everything the server sends in ENCRYPT_REQUEST: key type, digest, and X_TBS (``info``).

    ``to_sign`` is what the phone's key operates on: the DigestInfo for RSA (a raw private-key
    operation on it after type-1 padding is the PKCS#1 v1.5 signature), the request info itself
    for ECDSA (which hashes it as part of signing)."""
    digest = check_digest(digest)
    spki, key = _spki_and_key(public_key)
    kind, _size = keys.check_phone_public_key(key)
    info = build_request_info(device_name, spki, subject_from)
    to_sign = digest_info(info, digest) if kind == "rsa" else info
    return CsrRequest(device_name, kind, digest, spki, info, to_sign)


def request_spki(info: bytes) -> bytes:
    """The SubjectPublicKeyInfo inside a DER CertificationRequestInfo, byte for byte."""
    try:
        parts = der.children(der.read_one(info, der.SEQUENCE))
        if len(parts) < 3 or der.read_integer(parts[0]) != 0 or parts[1].tag != der.SEQUENCE \
                or parts[2].tag != der.SEQUENCE:
            raise der.DerError("expected version 0, a subject name and a SubjectPublicKeyInfo")
    except der.DerError as exc:
        raise CsrError(f"X_TBS is not a CertificationRequestInfo: {exc}") from None
    return parts[2].encoded


def phone_sign(info: bytes, private_key, digest="sha256", key_type=None) -> bytes:
    """The phone's part: sign X_TBS with the key generated in this session, after checking that
    X_TBS carries exactly that key (and the key type the server named)."""
    require("cryptography")
    digest = check_digest(digest)
    own = c.public_key_der(private_key.public_key())
    if request_spki(info) != own:
        raise CsrError("X_TBS carries a public key other than the key generated in this session; refusing to sign")
    kind, _size = c.key_description(private_key.public_key())
    if key_type is not None:
        wanted = {code: name for name, code in KEY_TYPE_CODES.items()}.get(key_type, key_type)
        if wanted != kind:
            raise CsrError(f"KEY_TYPE asks for {wanted!r} but the session key is {kind!r}; refusing to sign")
    if kind == "rsa":
        return private_key.sign(info, padding.PKCS1v15(), _hash(digest))
    return private_key.sign(info, ec.ECDSA(_hash(digest)))


def assemble(request: CsrRequest, signature: bytes) -> SignedCsr:
    """The PKCS#10 request from ``request`` and the phone's signature, verified with its own key."""
    require("cryptography")
    signature = bytes(signature)
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise CsrError(f"SIGNED_DATA must be 1\u2013{MAX_SIGNATURE_BYTES} bytes, got {len(signature)}")
    algorithm = [der.oid(_SIGNATURE_OIDS[(request.key_type, request.digest)])]
    if request.key_type == "rsa":
        algorithm.append(der.null())
    encoded = der.sequence(request.info, der.sequence(*algorithm), der.bit_string(signature))
    csr = verify(encoded, "assembled request")
    if csr.tbs_certrequest_bytes != request.info:
        raise CsrError("assembled request does not carry the request info that was sent to the phone")
    return SignedCsr(request.device_name, encoded, csr)


def verify(data: bytes, field: str = "csr"):
    """Load a PEM or DER request and check that its own key verifies its signature."""
    require("cryptography")
    data = bytes(data)
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        public_key = csr.public_key()
    except ValueError as exc:
        raise CsrError(f"{field} is not a PKCS#10 request: {exc}") from None
    kind, _size = c.key_description(public_key)
    hash_algorithm = csr.signature_hash_algorithm
    if hash_algorithm is None or hash_algorithm.name not in DIGEST_CODES:
        raise CsrError(f"{field} is signed with {getattr(hash_algorithm, 'name', 'no hash')}; "
                       "only SHA-256 and SHA-512 are accepted")
    try:
        if kind == "rsa":
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), hash_algorithm)
        else:
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(hash_algorithm))
    except (InvalidSignature, ValueError):
        raise CsrError(f"{field} signature does not verify with the public key in the request "
                       "(it was not signed by the phone's key)") from None
    return csr


def to_pem(encoded: bytes) -> str:
    return der.pem("CERTIFICATE REQUEST", encoded)


def to_der(csr) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def key_type(public_key) -> str:
    """``rsa`` or ``ec``."""
    return c.key_description(public_key)[0]


__all__ = ["CsrError", "CsrRequest", "SignedCsr", "assemble", "build_request_info", "check_digest", "digest_info",
           "phone_sign", "prepare", "request_spki", "verify", "to_pem", "to_der",
           "key_type"]

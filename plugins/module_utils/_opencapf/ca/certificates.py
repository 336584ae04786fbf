# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsing and describing X.509 certificates and public keys."""

from __future__ import annotations

import datetime as _dt
import hashlib
import re

from .. import der
from ..dependencies import require, serialization, x509, ec, rsa, NameOID
from ..errors import CertificateError, CertificateInputError
from ..vocabulary import MAX_CERTIFICATES, MAX_INPUT_BYTES, format_utc

_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s+.*?-----END CERTIFICATE-----", re.S)


def load_pem_certificates(data, field: str = "certificate") -> list:
    """Every certificate in a PEM text (a chain or bundle); at least one, at most 50."""
    require("cryptography")
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if len(data) > MAX_INPUT_BYTES:
        raise CertificateInputError(field, f"is {len(data)} bytes, larger than the limit of {MAX_INPUT_BYTES} bytes "
                                           "(1 MiB)")
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        if data.lstrip().startswith(b"\x30"):
            return [load_der_certificate(data, field)]
        raise CertificateInputError(field, "contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
    if len(blocks) > MAX_CERTIFICATES:
        raise CertificateInputError(field, f"holds {len(blocks)} certificates; at most {MAX_CERTIFICATES} are accepted")
    result = []
    for index, block in enumerate(blocks):
        try:
            result.append(x509.load_pem_x509_certificate(block))
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            raise CertificateInputError(field, f"holds a malformed certificate (#{index + 1}, PEM/DER): {exc}") from None
    return result


def load_pem_certificate(data, field: str = "certificate"):
    """Exactly one certificate."""
    certificates = load_pem_certificates(data, field)
    if len(certificates) != 1:
        raise CertificateInputError(field, f"must hold exactly one certificate, found {len(certificates)}")
    return certificates[0]


def load_der_certificate(data: bytes, field: str = "certificate"):
    require("cryptography")
    try:
        return x509.load_der_x509_certificate(bytes(data))
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise CertificateInputError(field, f"is not a DER X.509 certificate: {exc}") from None


def to_pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def pem_of_der(der_bytes: bytes) -> str:
    """The PEM text of a DER certificate, character for character what ``to_pem`` gives for it. For a
    caller that has the DER: ``to_pem`` encodes the certificate object once more."""
    return der.pem("CERTIFICATE", der_bytes)


def to_der(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def fingerprint(certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex: the identity of a certificate."""
    return sha256_hex(to_der(certificate))


def sha256_hex(der: bytes) -> str:
    """SHA-256 of a DER encoding, lower-case hex: the fingerprint of a certificate or a public key."""
    return hashlib.sha256(der).hexdigest()


# The DER SubjectPublicKeyInfo of an EC P-256 key up to its point: SEQUENCE { SEQUENCE { id-ecPublicKey,
# prime256v1 }, BIT STRING with no unused bits }; then the uncompressed point 04 || X || Y (32 octets each).
_P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
_P256_SPKI_LENGTH = len(_P256_SPKI_PREFIX) + 65
_P256_FIELD_PRIME = 2 ** 256 - 2 ** 224 + 2 ** 192 + 2 ** 96 - 1


def public_key_der(public_key, loaded_from: bytes | None = None) -> bytes:
    """The key's DER SubjectPublicKeyInfo, as the cryptography library encodes it.

    ``loaded_from``: the DER the caller loaded ``public_key`` from. When it is already the library's
    encoding of such a key, it is returned as it is: an EC P-256 key with an uncompressed point whose
    coordinates are below the field prime (each coordinate then comes out as it went in), since
    encoding the key again costs a field inversion. Any other form (a compressed point, RSA) is
    encoded again."""
    if loaded_from is not None and len(loaded_from) == _P256_SPKI_LENGTH:
        given = bytes(loaded_from)
        point = len(_P256_SPKI_PREFIX)
        if given.startswith(_P256_SPKI_PREFIX) and given[point] == 4 \
                and int.from_bytes(given[point + 1:point + 33], "big") < _P256_FIELD_PRIME \
                and int.from_bytes(given[point + 33:], "big") < _P256_FIELD_PRIME:
            return given
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_identifier(public_key_der_bytes: bytes) -> bytes:
    """The key identifier of RFC 5280 4.2.1.2 (1) from a DER SubjectPublicKeyInfo (SEQUENCE of the
    algorithm SEQUENCE and the key BIT STRING): SHA-1 of its subjectPublicKey bits, as
    ``x509.SubjectKeyIdentifier.from_public_key`` computes it from the key."""
    try:
        algorithm, bits = der.children(der.read_one(public_key_der_bytes, der.SEQUENCE))
    except ValueError:  # der.DerError, or not two elements
        algorithm = bits = None
    if algorithm is None or algorithm.tag != der.SEQUENCE or bits.tag != der.BIT_STRING or bits.value[:1] != b"\x00":
        raise CertificateError("public key is not a DER SubjectPublicKeyInfo with whole-octet key bits")
    return hashlib.sha1(bits.value[1:]).digest()  # RFC 5280 names SHA-1 here


def public_key_fingerprint(public_key) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex."""
    return sha256_hex(public_key_der(public_key))


def load_public_key(data: bytes, field: str = "public_key"):
    """A public key from PEM or DER SubjectPublicKeyInfo (or a PEM certificate/CSR carrying one)."""
    require("cryptography")
    data = bytes(data)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return load_pem_certificate(data, field).public_key()
        if b"-----BEGIN CERTIFICATE REQUEST-----" in data:
            return x509.load_pem_x509_csr(data).public_key()
        if b"-----BEGIN" in data:
            return serialization.load_pem_public_key(data)
        return serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise CertificateInputError(field, f"is not a PEM or DER public key: {exc}") from None


def key_description(public_key) -> tuple[str, int]:
    """``("rsa", bits)`` or ``("ec", curve bits)``; anything else is refused."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec", public_key.curve.key_size
    raise CertificateError(f"unsupported public key type {type(public_key).__name__}; only RSA and EC keys are used")


def common_name(name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _utc(moment: _dt.datetime) -> _dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def not_before(certificate) -> _dt.datetime:
    return _utc(certificate.not_valid_before_utc)


def not_after(certificate) -> _dt.datetime:
    return _utc(certificate.not_valid_after_utc)


def basic_constraints(certificate):
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return None


def authority_key_identifier(certificate):
    """The AKI naming ``certificate`` as issuer: its own SKI, else one computed from its key."""
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(certificate.public_key())


def key_usage(certificate):
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def is_ca(certificate) -> bool:
    constraint = basic_constraints(certificate)
    return bool(constraint and constraint.value.ca)


def is_self_signed(certificate) -> bool:
    return certificate.subject == certificate.issuer and signed_by(certificate, certificate)


def signed_by(certificate, issuer) -> bool:
    """Whether ``issuer``'s key verifies ``certificate``'s signature (names must chain too)."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature and unsupported algorithms alike
        return False
    return True


def describe(certificate) -> dict:
    """A plain summary of a certificate for results and reports."""
    kind, size = key_description(certificate.public_key())
    return {
        "subject": certificate.subject.rfc4514_string(),
        "common_name": common_name(certificate.subject),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "fingerprint": fingerprint(certificate),
        "not_before": format_utc(not_before(certificate)),
        "not_after": format_utc(not_after(certificate)),
        "key_type": kind,
        "key_size": size,
        "is_ca": is_ca(certificate),
    }

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An LSC encoded from a template: the library's own encoding of what every LSC of one CAPF
certificate shares, around the few parts that differ from one LSC to the next.

Two LSCs that one CAPF certificate signs for keys of one kind differ only in their serial, their
validity, the common name of their subject (repeated in the subject alternative name), their
public key and its key identifier. The library's certificate builder checks and encodes every part
again for each LSC, which costs more CPU than an EC P-256 signature. A template takes the parts
that do not change from an LSC the builder made for the same signer, kind and CRL location (its
prototype), encodes the others here and signs the TBSCertificate with the CAPF key directly.

A template is trusted only once it has rebuilt its own prototype byte for byte, signature
algorithm included: otherwise (an unexpected encoding, a key type it does not sign with) the
builder makes every LSC of that signer, kind and CRL location, as it did the prototype.
"""

from __future__ import annotations

import datetime as _dt
import threading

from .. import der
from ..dependencies import ec, hashes, padding, rsa

COMMON_NAME = der.oid("2.5.4.3")
SUBJECT_ALTERNATIVE_NAME = der.oid("2.5.29.17")
SUBJECT_KEY_IDENTIFIER = der.oid("2.5.29.14")
UTF8_STRING = 0x0C
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
_DIRECTORY_NAME = 4  # GeneralName [4] Name (EXPLICIT: Name is a CHOICE)
_SIGNATURE_ALGORITHMS = {  # the AlgorithmIdentifier the builder writes for a SHA-256 signature by each key type
    "rsa": der.sequence(der.oid("1.2.840.113549.1.1.11"), der.null()),  # sha256WithRSAEncryption
    "ec": der.sequence(der.oid("1.2.840.10045.4.3.2")),  # ecdsa-with-SHA256
}


def _tlv(tag: int, value: bytes) -> bytes:
    """``der.tlv`` for a value of bytes, with the short length of most of an LSC's parts made inline."""
    size = len(value)
    return bytes((tag, size)) + value if size < 0x80 else der.tlv(tag, value)


def _time(moment: _dt.datetime) -> bytes:
    """A certificate's time as RFC 5280 4.1.2.5 has it (and the library writes it): UTCTime through
    2049, GeneralizedTime from 2050; whole seconds, UTC (naive or aware)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    if 1950 <= moment.year < 2050:
        return _tlv(UTC_TIME, b"%02d%02d%02d%02d%02d%02dZ" % (
            moment.year % 100, moment.month, moment.day, moment.hour, moment.minute, moment.second))
    return _tlv(GENERALIZED_TIME, b"%04d%02d%02d%02d%02d%02dZ" % (
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second))


def _common_name(device_name: str) -> bytes:
    """The RDN ``CN=device_name`` (UTF8String, as the builder writes a common name, which it refuses
    outside 1 to 64 octets)."""
    encoded = device_name.encode("utf-8")
    if not 0 < len(encoded) <= 64:
        raise ValueError(f"an LSC's common name (its device name) must be 1 to 64 octets, not {len(encoded)}")
    return _tlv(der.SET, _tlv(der.SEQUENCE, COMMON_NAME + _tlv(UTF8_STRING, encoded)))


def _key_kind(private_key) -> str | None:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return "ec"
    return None


class Template:
    """The encoding of a signer's LSCs for one key kind and CRL location, but for the parts of each."""

    def __init__(self, prototype_tbs: bytes, signature_algorithm: bytes):
        version, _serial, signature, issuer, _validity, subject, _key, extensions = \
            der.children(der.read_one(prototype_tbs, der.SEQUENCE))
        if version.encoded != b"\xa0\x03\x02\x01\x02" or signature.encoded != signature_algorithm \
                or extensions.tag != 0xA3:
            raise der.DerError("the prototype is not a version 3 certificate signed as expected")
        self.signature_algorithm = signature_algorithm
        self._head = version.encoded + signature.encoded + issuer.encoded  # after the serial: signature, issuer
        # The subject: CN = device name, then the issuer's attributes the LSC takes over.
        self._inherited = b"".join(rdn.encoded for rdn in der.children(subject)[1:])
        # The extensions: those before the subject alternative name and key identifier, then those after.
        listed = der.children(der.read_one(extensions.value, der.SEQUENCE))
        names = [der.children(extension)[0].encoded for extension in listed]
        at = names.index(SUBJECT_ALTERNATIVE_NAME)
        if names[at + 1] != SUBJECT_KEY_IDENTIFIER:
            raise der.DerError("the prototype's subject key identifier does not follow its alternative name")
        self._before = b"".join(extension.encoded for extension in listed[:at])
        self._after = b"".join(extension.encoded for extension in listed[at + 2:])

    def tbs(self, serial: int, not_before: _dt.datetime, not_after: _dt.datetime, device_name: str,
            public_key_der: bytes, key_identifier: bytes) -> bytes:
        """The TBSCertificate of one LSC (what the builder would encode for the same parts)."""
        name = _common_name(device_name)
        alternative_name = _tlv(der.SEQUENCE, SUBJECT_ALTERNATIVE_NAME + _tlv(der.OCTET_STRING, _tlv(
            der.SEQUENCE, _tlv(0xA0 | _DIRECTORY_NAME, _tlv(der.SEQUENCE, name)))))
        key_id = _tlv(der.SEQUENCE, SUBJECT_KEY_IDENTIFIER + _tlv(der.OCTET_STRING,
                                                                  _tlv(der.OCTET_STRING, key_identifier)))
        head = self._head
        return der.tlv(der.SEQUENCE, b"".join((
            head[:5], der.integer(serial), head[5:],
            _tlv(der.SEQUENCE, _time(not_before) + _time(not_after)),
            _tlv(der.SEQUENCE, name + self._inherited),
            public_key_der,
            der.tlv(0xA3, der.tlv(der.SEQUENCE, b"".join((self._before, alternative_name, key_id, self._after)))),
        )))

    def certificate(self, tbs: bytes, private_key) -> bytes:
        """The signed certificate's DER: ``tbs`` signed with SHA-256 by ``private_key``."""
        if isinstance(private_key, rsa.RSAPrivateKey):
            signature = private_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = private_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        signature_value = der.tlv(der.BIT_STRING, b"\x00" + signature)  # whole octets: no unused bits
        return der.tlv(der.SEQUENCE, b"".join((tbs, self.signature_algorithm, signature_value)))


_templates: dict[tuple, Template | None] = {}
_lock = threading.Lock()
_KEPT = 32  # templates kept (signers, kinds and CRL locations of one process: a handful)


def cached(key: tuple) -> tuple[bool, Template | None]:
    """(known, template) for ``key`` (signer fingerprint, its key's identity, key kind, CRL location)."""
    with _lock:
        if key in _templates:
            return True, _templates[key]
    return False, None


def learn(key: tuple, private_key, prototype_der: bytes, parts: tuple) -> Template | None:
    """Make the template of ``key`` from ``prototype_der`` (an LSC the builder made from ``parts``:
    serial, notBefore, notAfter, device name, key DER, key identifier) and keep it only when it
    encodes that LSC again byte for byte, signature algorithm included; None (remembered) otherwise."""
    template = None
    kind = _key_kind(private_key)
    if kind is not None:
        try:
            tbs, algorithm, _signature = der.children(der.read_one(prototype_der, der.SEQUENCE))
            candidate = Template(tbs.encoded, _SIGNATURE_ALGORITHMS[kind])
            if algorithm.encoded == candidate.signature_algorithm and candidate.tbs(*parts) == tbs.encoded:
                template = candidate
        except (der.DerError, ValueError, IndexError):
            template = None
    with _lock:
        if len(_templates) >= _KEPT:
            _templates.clear()
        _templates[key] = template
    return template

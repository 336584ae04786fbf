# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF CRL (RFC 5280 section 5): the revoked LSCs that the active CAPF certificate signed.

A version 2 CRL signed by the CAPF key with SHA-256, carrying a CRL number that only grows and the
authority key identifier of the CAPF certificate; each entry names its reason (omitted for
``unspecified``, as RFC 5280 5.3.1 asks). LSCs of a third-party CA are revoked at that CA, not here;
LSCs of an earlier CAPF certificate are not listed (their signer's key is retired).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ..dependencies import hashes, require, serialization, x509
from ..vocabulary import format_utc, parse_utc
from . import authority
from . import certificates as c

CRL_PATH = "/capf.crl"  # where the service's HTTP responder serves it
MEDIA_TYPE = "application/pkix-crl"  # RFC 5280 section 4.2.1.13 / RFC 2585


@dataclass(frozen=True)
class Entry:
    serial: str  # hexadecimal, as the store keeps it
    revoked_at: str
    reason: str


def authority_key_identifier(certificate):
    """The AKI naming ``certificate`` as issuer: its own SKI, else one computed from its key."""
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(certificate.public_key())


def signed_by(lsc_pem: str, signer: authority.Signer) -> bool:
    """Whether the LSC ``lsc_pem`` names ``signer``'s certificate as its issuer (name and key identifier)."""
    certificate = c.load_pem_certificate(lsc_pem, "stored LSC")
    if certificate.issuer != signer.certificate.subject:
        return False
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return c.signed_by(certificate, signer.certificate)
    return aki.key_identifier == authority_key_identifier(signer.certificate).key_identifier


def build(signer: authority.Signer, entries, number: int, this_update: _dt.datetime, validity_hours: int):
    """Sign CRL ``number`` listing ``entries`` (``Entry``), valid from ``this_update`` for ``validity_hours``."""
    require("cryptography")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(signer.certificate.subject)
        .last_update(this_update)
        .next_update(this_update + _dt.timedelta(hours=validity_hours))
        .add_extension(authority_key_identifier(signer.certificate), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(parse_utc(entry.revoked_at, "revoked_at"))
        )
        if entry.reason != "unspecified":
            revoked = revoked.add_extension(x509.CRLReason(x509.ReasonFlags[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(signer.private_key, hashes.SHA256())


def to_der(crl) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def to_pem(der: bytes) -> str:
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM).decode("ascii")


def describe(der: bytes) -> dict:
    """A CRL's number, issuer, update times and entries, as results show them."""
    crl = x509.load_der_x509_crl(der)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    entries = []
    for revoked in crl:
        try:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = "unspecified"
        entries.append({"serial": format(revoked.serial_number, "x"), "reason": reason,
                        "revoked_at": format_utc(revoked.revocation_date_utc)})
    return {"number": number, "issuer": crl.issuer.rfc4514_string(),
            "this_update": format_utc(crl.last_update_utc), "next_update": format_utc(crl.next_update_utc),
            "entries": entries}


def can_sign_crls(certificate) -> bool:
    """Whether relying parties accept CRLs signed with ``certificate``'s key (KeyUsage cRLSign or none)."""
    usage = c.key_usage(certificate)
    return usage is None or usage.crl_sign

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF CRLs (RFC 5280 section 5): one per CAPF certificate, listing the revoked LSCs it signed.

A version 2 CRL signed by a CAPF certificate's key with SHA-256, carrying a CRL number that only
grows and the authority key identifier of that CAPF certificate; each entry names its reason
(omitted for ``unspecified``, as RFC 5280 5.3.1 asks) and its revocation date: the time the revocation
was recorded, which is the clock of the host that revoked, but never after the CRL's thisUpdate (the
signer's clock, which may run behind the revoking host's) nor after the date the CRL before it of the
same CAPF certificate gave (``revocation_date``): a CRL never says that a certificate was revoked after
the CRL was issued, nor later than its predecessor said. LSCs of a third-party CA are revoked at that
CA, not here. Each CAPF certificate's CRL has its own location (``issuer_location``): an LSC names
the one of the CAPF certificate that signed it, which stays its location after a rotation.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ..dependencies import hashes, require, serialization, x509
from ..vocabulary import format_utc, parse_utc
from . import authority
from . import certificates as c

CRL_PATH = "/capf.crl"  # where the service's HTTP responder serves the active CAPF certificate's CRL
ISSUER_ID_DIGITS = 16  # hex digits of a CAPF certificate's fingerprint that name its CRL's location
MEDIA_TYPE = "application/pkix-crl"  # RFC 5280 section 4.2.1.13 / RFC 2585


@dataclass(frozen=True)
class Entry:
    serial: str  # hexadecimal, as the store keeps it
    revoked_at: str  # as recorded: the revoking host's clock
    reason: str


def issuer_location(location: str, fingerprint: str) -> str:
    """The location of the CRL of the CAPF certificate with SHA-256 ``fingerprint``, given a common
    ``location`` (the ``crl_url`` or ``crl_path`` parameter, or ``CRL_PATH``): ``-`` and the first
    ``ISSUER_ID_DIGITS`` hex digits of the fingerprint before its final ``.crl`` (``.crl`` added when
    it has none), e.g. ``http://capf.example.com:8080/capf-9c1e04b2d7a3f5e8.crl``."""
    stem = location[:-4] if location.endswith(".crl") else location
    return f"{stem}-{fingerprint[:ISSUER_ID_DIGITS]}.crl"


def issuer_identity(certificate) -> tuple[bytes, bytes]:
    """(subject DER, key identifier): how an LSC names ``certificate`` as its issuer."""
    return certificate.subject.public_bytes(), c.authority_key_identifier(certificate).key_identifier


def named_issuer(lsc_pem: str) -> tuple[bytes, bytes | None]:
    """(issuer name DER, authority key identifier or None) of the LSC ``lsc_pem``."""
    certificate = c.load_pem_certificate(lsc_pem, "stored LSC")
    try:
        key_identifier = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        key_identifier = None
    return certificate.issuer.public_bytes(), key_identifier


def signed_by(lsc_pem: str, issuer_certificate) -> bool:
    """Whether ``issuer_certificate``'s key signed the LSC ``lsc_pem`` (for LSCs without a key identifier)."""
    certificate = c.load_pem_certificate(lsc_pem, "stored LSC")
    return certificate.issuer == issuer_certificate.subject and c.signed_by(certificate, issuer_certificate)


def revocation_date(entry: Entry, this_update: _dt.datetime, earlier: dict | None = None) -> _dt.datetime:
    """The revocationDate of ``entry`` on a CRL issued at ``this_update``: its recorded time, but not
    after ``this_update`` nor after the date ``earlier`` (``revocation_dates`` of the CRL before it of
    the same issuer) gave it."""
    moment = min(parse_utc(entry.revoked_at, "revoked_at"), this_update)
    before = (earlier or {}).get(entry.serial)
    return moment if before is None else min(moment, before)


def revocation_dates(der: bytes | None) -> dict[str, _dt.datetime]:
    """The revocationDate of each entry of the CRL ``der`` (none: no CRL), by serial as the store keeps it."""
    if not der:
        return {}
    return {format(revoked.serial_number, "x"): revoked.revocation_date_utc for revoked in x509.load_der_x509_crl(der)}


def build(signer: authority.Signer, entries, number: int, this_update: _dt.datetime, validity_hours: int,
          earlier: dict | None = None):
    """Sign CRL ``number`` listing ``entries`` (``Entry``), valid from ``this_update`` for ``validity_hours``;
    each entry revoked at its ``revocation_date`` (``earlier``: the dates of the CRL before it of the same issuer)."""
    require("cryptography")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(signer.certificate.subject)
        .last_update(this_update)
        .next_update(this_update + _dt.timedelta(hours=validity_hours))
        .add_extension(signer.authority_key_identifier, critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(revocation_date(entry, this_update, earlier))
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

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one check every certificate a third-party CA returns passes before it is recorded or delivered.

A CA signs what it likes; the phone must get only what we asked for. ``check`` compares the
certificate with the request (the device name, the phone's public key) and the trust anchors of
CAPF-trust, and answers ``Accepted`` (with the verified chain) or ``Refused`` with one code of
``vocabulary.CERTIFICATE_REFUSALS``:

* ``wrong_key``: the certificate's public key is not the phone's key of the request;
* ``wrong_subject``: the subject must hold exactly one CN, equal to the device name (exact, case
  included); besides it a CA may set only O, OU, L, ST and C (the attributes our own LSC
  profile takes from the issuer), any other attribute is refused;
* ``wrong_subject_alt_name``: when present, every subjectAltName entry names the device: a
  directoryName under the subject rule, or a dNSName / URI that is the device name;
* ``is_ca``: BasicConstraints CA:TRUE, or KeyUsage keyCertSign / cRLSign;
* ``missing_key_usage``: KeyUsage must allow digitalSignature and keyEncipherment (EC keys:
  keyEncipherment or keyAgreement), as ``ca.rules.check_lsc_key_usage``; an ExtendedKeyUsage, when
  present, must allow clientAuth (the phone authenticates to call control as a TLS client);
* ``not_yet_valid``: notBefore later than now plus ``CLOCK_SKEW``;
* ``expired``: notAfter not after now;
* ``untrusted_chain``: no chain, through the CA certificates the CA sent along, to a certificate
  in CAPF-trust, or a CA certificate of that chain outside its validity;
* ``unreadable``: an extension the certificate library cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass, field as _field

from ..ca import certificates as c
from ..ca import rules
from ..dependencies import ExtendedKeyUsageOID, NameOID, x509
from ..errors import CertificateError
from ..vocabulary import CERTIFICATE_REFUSALS, CLOCK_SKEW, utc_now

(WRONG_KEY, WRONG_SUBJECT, WRONG_SUBJECT_ALT_NAME, IS_CA, MISSING_KEY_USAGE, NOT_YET_VALID, EXPIRED,
 UNTRUSTED_CHAIN, UNREADABLE) = CERTIFICATE_REFUSALS
# Subject attributes besides the CN that a CA may set or change.
# (dotted OIDs of O, OU, L, ST and C: the table is read without cryptography, as the modules' imports are)
CA_MAY_SET = ("2.5.4.10", "2.5.4.11", "2.5.4.7", "2.5.4.8", "2.5.4.6")
_CA_MAY_SET_TEXT = "O, OU, L, ST, C"


@dataclass(frozen=True)
class Accepted:
    """``chain`` runs from the certificate up to the CAPF-trust certificate it chains to (both included)."""

    certificate: object
    chain: list = _field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    code: str
    reason: str


def check(certificate, *, device_name: str, public_key, anchors, intermediates=(), at=None):
    """Accepted when ``certificate`` is the LSC asked for: ``device_name`` and ``public_key`` (the
    request's key object); ``anchors``: CAPF-trust; ``intermediates``: what the CA sent along
    (untrusted); ``at``: the moment to judge validity at (now)."""
    moment = at or utc_now()
    try:
        refusal = (_key(certificate, public_key) or _subject(certificate.subject, device_name)
                   or _subject_alt_name(certificate, device_name) or _not_ca(certificate) or _key_usage(certificate)
                   or _validity(certificate, moment))
    except ValueError as exc:  # an extension the library cannot read
        return Refused(UNREADABLE, f"the certificate's extensions cannot be read: {exc}")
    if refusal:
        return refusal
    return _chain(certificate, list(anchors), list(intermediates), moment)


def _key(certificate, public_key):
    if c.public_key_der(certificate.public_key()) != c.public_key_der(public_key):
        return Refused(WRONG_KEY, "the certificate is for a different public key than the phone's key in the request")
    return None


def _name_problem(name, device_name: str) -> str:
    """Why ``name`` does not name the device, or ""."""
    common_names = [str(attribute.value) for attribute in name if attribute.oid == NameOID.COMMON_NAME]
    if common_names != [device_name]:
        shown = ", ".join(repr(value) for value in common_names) or "none"
        return f"CN must be the device name {device_name!r} (exactly one CN), has {shown}"
    for attribute in name:
        if attribute.oid != NameOID.COMMON_NAME and attribute.oid.dotted_string not in CA_MAY_SET:
            label = getattr(attribute, "rfc4514_attribute_name", attribute.oid.dotted_string)
            return f"attribute {label} is not one a CA may set (besides the CN only {_CA_MAY_SET_TEXT})"
    return ""


def _subject(subject, device_name: str):
    problem = _name_problem(subject, device_name)
    if problem:
        return Refused(WRONG_SUBJECT, f"subject {subject.rfc4514_string()!r}: {problem}")
    return None


def _subject_alt_name(certificate, device_name: str):
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for entry in names:
        if isinstance(entry, x509.DirectoryName):
            problem = _name_problem(entry.value, device_name)
        elif isinstance(entry, (x509.DNSName, x509.UniformResourceIdentifier)):
            problem = "" if str(entry.value).upper() == device_name.upper() else "does not name the device"
        else:
            problem = "is a kind of name an LSC does not carry"
        if problem:
            return Refused(WRONG_SUBJECT_ALT_NAME, f"subjectAltName entry {entry.value!r}: {problem}")
    return None


def _not_ca(certificate):
    if c.is_ca(certificate):
        return Refused(IS_CA, "the certificate is a CA certificate (BasicConstraints CA:TRUE), not an LSC")
    usage = c.key_usage(certificate)
    if usage is not None and (usage.key_cert_sign or usage.crl_sign):
        return Refused(IS_CA, "the certificate may sign certificates or CRLs (KeyUsage keyCertSign or cRLSign)")
    return None


def _key_usage(certificate):
    try:
        rules.check_lsc_key_usage(certificate, "the certificate")
    except CertificateError as exc:
        return Refused(MISSING_KEY_USAGE, f"{exc}; secure registration would fail")
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in purposes and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes:
        return Refused(MISSING_KEY_USAGE, "the certificate's ExtendedKeyUsage lacks clientAuth (the phone "
                                          "authenticates to call control as a TLS client)")
    return None


def _dates_problem(certificate, moment) -> tuple[str, str]:
    if c.not_before(certificate) > moment + CLOCK_SKEW:
        return NOT_YET_VALID, f"is not valid before {c.not_before(certificate):%Y-%m-%dT%H:%M:%SZ}"
    if c.not_after(certificate) <= moment:
        return EXPIRED, f"expired at {c.not_after(certificate):%Y-%m-%dT%H:%M:%SZ}"
    return "", ""


def _validity(certificate, moment):
    code, problem = _dates_problem(certificate, moment)
    if code:
        return Refused(code, f"the certificate {problem} (now {moment:%Y-%m-%dT%H:%M:%SZ}, clock skew allowed "
                             f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes)")
    return None


def _chain(certificate, anchors, intermediates, moment):
    if not anchors:
        return Refused(UNTRUSTED_CHAIN, "CAPF-trust holds no certificate: upload the CA's root before using it")
    try:
        # The dates of the leaf are judged above, with the clock skew; the CA certificates' below.
        chain = rules.build_chain(certificate, anchors, intermediates, check_dates=False)
    except CertificateError as exc:
        return Refused(UNTRUSTED_CHAIN, f"no chain to CAPF-trust: {exc}")
    for authority in chain[1:]:
        _code, problem = _dates_problem(authority, moment)
        if problem:
            return Refused(UNTRUSTED_CHAIN, f"CA certificate {c.common_name(authority.subject)!r} of the chain "
                                            f"{problem}")
    return Accepted(certificate, chain)

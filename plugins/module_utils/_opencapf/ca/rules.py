# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate rules from the CAPF configuration guide, implemented once.

* CA certificates (uploaded roots and intermediates, and the CAPF certificate) carry
  BasicConstraints CA:TRUE with pathlen 0 and KeyUsage digitalSignature + keyCertSign; TLS and
  LSC installation fail without them.
* ``CAPF-`` common names are reserved for the CAPF certificate.
* A CA-signed IPsec certificate must not be a CA.
* Table 1 decides which of a CA root and a CA's HTTPS certificate must be uploaded, and where.
* Chains are built and verified here for every trust decision.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field as _field

from . import certificates as c
from ..errors import CertificateError
from ..vocabulary import RESERVED_CN_PREFIX, utc_now

MAX_CHAIN_DEPTH = 8


def check_ca_certificate(certificate, field: str = "certificate", *, max_path_length: int = 0) -> None:
    """A CA certificate needs CA:TRUE, pathlen within ``max_path_length`` (0 by default) and
    KeyUsage digitalSignature + keyCertSign."""
    name = c.common_name(certificate.subject) or certificate.subject.rfc4514_string()
    constraint = c.basic_constraints(certificate)
    if constraint is None or not constraint.value.ca:
        raise CertificateError(f"{field} ({name}) must have BasicConstraints CA:TRUE")
    path_length = constraint.value.path_length
    if path_length is None or path_length > max_path_length:
        shown = "unlimited" if path_length is None else path_length
        raise CertificateError(
            f"{field} ({name}) must have BasicConstraints pathlen:{max_path_length}, has pathlen {shown}"
        )
    usage = c.key_usage(certificate)
    if usage is None or not (usage.digital_signature and usage.key_cert_sign):
        raise CertificateError(f"{field} ({name}) must have KeyUsage digitalSignature and keyCertSign")


def check_not_reserved(certificate, field: str = "certificate") -> None:
    """Refuse an uploaded certificate whose CN contains the reserved ``CAPF-`` prefix."""
    name = c.common_name(certificate.subject)
    if RESERVED_CN_PREFIX.lower() in name.lower():
        raise CertificateError(
            f"{field} common name {name!r} contains {RESERVED_CN_PREFIX!r}, which is reserved for the CAPF certificate"
        )


def check_ipsec_certificate(certificate, field: str = "certificate") -> None:
    """A CA-signed IPsec certificate must not carry CA:TRUE."""
    if not c.is_self_signed(certificate) and c.is_ca(certificate):
        raise CertificateError(f"{field} is a CA-signed IPsec certificate and must not have BasicConstraints CA:TRUE")


def check_lsc_key_usage(certificate, field: str = "certificate") -> None:
    """An LSC must allow digitalSignature and keyEncipherment (keyAgreement for EC keys)."""
    usage = c.key_usage(certificate)
    kind, _size = c.key_description(certificate.public_key())
    second_ok = usage is not None and (usage.key_encipherment or (kind == "ec" and usage.key_agreement))
    if usage is None or not usage.digital_signature or not second_ok:
        raise CertificateError(
            f"{field} lacks the KeyUsage an LSC needs (digitalSignature and keyEncipherment"
            f"{' or keyAgreement' if kind == 'ec' else ''})"
        )


def check_trust_upload(certificate, field: str = "certificate", *, max_path_length: int = 0) -> None:
    """Every rule for a CA certificate uploaded to a trust store."""
    check_not_reserved(certificate, field)
    if c.is_ca(certificate):
        check_ca_certificate(certificate, field, max_path_length=max_path_length)


def build_chain(leaf, anchors, intermediates=(), *, at: _dt.datetime | None = None,
                check_dates: bool = True) -> list:
    """The verified chain from ``leaf`` up to one of the trusted ``anchors`` (any trusted
    certificate ends the chain), using ``intermediates`` (not trusted by themselves) on the way.
    Raises CertificateError saying why no chain exists."""
    anchors = list(anchors)
    anchor_prints = {c.fingerprint(anchor) for anchor in anchors}
    candidates = anchors + list(intermediates)
    moment = at or utc_now()
    chain = [leaf]
    current = leaf
    for _depth in range(MAX_CHAIN_DEPTH):
        if check_dates and not c.not_before(current) <= moment <= c.not_after(current):
            raise CertificateError(
                f"certificate {c.common_name(current.subject)!r} is outside its validity period "
                f"at {moment:%Y-%m-%dT%H:%M:%SZ}"
            )
        if c.fingerprint(current) in anchor_prints:
            return chain
        issuers = [candidate for candidate in candidates if c.signed_by(current, candidate)]
        if not issuers or (c.is_self_signed(current) and issuers == [current]):
            raise CertificateError(
                f"certificate {c.common_name(current.subject)!r} does not chain to a trusted certificate "
                f"(no trusted issuer {current.issuer.rfc4514_string()!r})"
            )
        issuer = issuers[0]
        if not c.is_ca(issuer):
            raise CertificateError(f"issuer {c.common_name(issuer.subject)!r} is not a CA")
        chain.append(issuer)
        current = issuer
    raise CertificateError(f"certificate chain is longer than {MAX_CHAIN_DEPTH}")


@dataclass(frozen=True)
class UploadPlan:
    """Table 1's answer: which certificates go to which trust stores, and why."""

    scenario: int
    reason: str
    uploads: list = _field(default_factory=list)  # (role, certificate, trust stores)


def table1(ca_root, https_certificate=None, intermediates=()) -> UploadPlan:
    """Decide from Table 1 what to upload for a third-party CA.

    1. root and HTTPS certificate are the same: the root;
    2. HTTPS certificate issued by that root: the root;
    3. HTTPS certificate issued by an intermediate that the root issued: the root;
    4. HTTPS certificate under the same root but not verifiable from it with what was given:
       the root and the HTTPS certificate.
    The root always goes to CAPF-trust and CallManager-trust, the HTTPS certificate to CAPF-trust.
    """
    root_stores = ("capf-trust", "callmanager-trust")
    if not c.is_self_signed(ca_root):
        raise CertificateError("ca_root must be a self-signed root certificate")
    root = [("ca_root", ca_root, root_stores)]
    if https_certificate is None:
        plan = UploadPlan(0, "no HTTPS certificate given: upload the CA root", root)
    elif c.fingerprint(https_certificate) == c.fingerprint(ca_root):
        plan = UploadPlan(1, "the CA root and the HTTPS certificate are the same: upload the CA root", root)
    elif c.signed_by(https_certificate, ca_root):
        plan = UploadPlan(2, "the HTTPS certificate is issued by the CA root: upload the CA root", root)
    else:
        plan = None
        for index, intermediate in enumerate(intermediates):
            if c.signed_by(intermediate, ca_root) and c.signed_by(https_certificate, intermediate):
                check_ca_certificate(intermediate, f"intermediates[{index}]")
                plan = UploadPlan(3, "the HTTPS certificate is issued by an intermediate CA of the CA root: "
                                     "upload the CA root", root)
                break
        if plan is None:
            plan = UploadPlan(
                4,
                "the HTTPS certificate differs from the CA root and cannot be verified from it alone: "
                "upload the CA root and the HTTPS certificate",
                root + [("https_certificate", https_certificate, ("capf-trust",))],
            )
    # A root above an intermediate CA needs a path length that covers it.
    check_trust_upload(ca_root, "ca_root", max_path_length=1 if plan.scenario in (3, 4) else 0)
    if https_certificate is not None:
        check_not_reserved(https_certificate, "https_certificate")
    return plan

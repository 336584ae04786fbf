# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate rules from the CAPF configuration guide, implemented once.

* CA certificates uploaded to the trust stores (roots and intermediates) are checked against one
  rule table, ``CA_RULES``: each rule has an id, says what it checks and is either always enforced
  or a harmless deviation. A harmless deviation is accepted with a warning naming the rule; strict
  mode refuses it. The guide asks for BasicConstraints CA:TRUE with pathlen 0 and KeyUsage
  digitalSignature + keyCertSign, which is what Cisco's TLS stack needs of the CAPF certificate;
  real-world roots often have no pathlen (and the root of a two-tier PKI cannot have pathlen 0),
  which harms nothing in a trust store. CA:TRUE, keyCertSign, a path length that allows the
  chain, and the ``CAPF-`` rule are always enforced.
* The CAPF certificate itself serves TLS to phones, so every rule of the table holds for it.
* ``CAPF-`` common names are reserved for the CAPF certificate.
* A CA-signed IPsec certificate must not be a CA.
* Table 1 decides which of a CA root and a CA's HTTPS certificate must be uploaded, and where.
* Chains are built and verified here for every trust decision.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field as _field
from typing import Callable

from . import certificates as c
from ..errors import CertificateError, CertificateInputError
from ..vocabulary import RESERVED_CN_PREFIX, utc_now

MAX_CHAIN_DEPTH = 8
ENFORCED = "enforced"
HARMLESS = "harmless-deviation"
STRICT_OPTION = "strict_ca_rules"


@dataclass(frozen=True)
class CaRule:
    """One rule for CA certificates: ``check(certificate, below)`` returns what is wrong, or None.
    ``below`` is the number of CA certificates uploaded together with it that chain below it."""

    id: str
    checks: str
    severity: str
    check: Callable = _field(repr=False, compare=False)
    every_certificate: bool = False  # also for certificates that are not CAs


def _reserved_cn(certificate, _below: int) -> str | None:
    name = c.common_name(certificate.subject)
    if RESERVED_CN_PREFIX.lower() in name.lower():
        return f"has common name {name!r}, which contains {RESERVED_CN_PREFIX!r}, reserved for the CAPF certificate"
    return None


def _ca_true(certificate, _below: int) -> str | None:
    return None if c.is_ca(certificate) else "must have BasicConstraints CA:TRUE"


def _key_cert_sign(certificate, _below: int) -> str | None:
    usage = c.key_usage(certificate)
    if usage is not None and not usage.key_cert_sign:
        return "must have KeyUsage keyCertSign"
    return None


def _path_length(certificate) -> int | None:
    constraint = c.basic_constraints(certificate)
    return None if constraint is None else constraint.value.path_length


def _path_covers_chain(certificate, below: int) -> str | None:
    path_length = _path_length(certificate)
    if path_length is not None and path_length < below:
        return (f"has BasicConstraints pathlen:{path_length}, which forbids the {below} intermediate CA(s) "
                f"uploaded below it")
    return None


def _path_length_exact(certificate, below: int) -> str | None:
    path_length = _path_length(certificate)
    if path_length is None:
        return f"has no BasicConstraints pathlen (unlimited); the guide asks for pathlen:{below}"
    if path_length > below:
        return f"has BasicConstraints pathlen:{path_length}; the guide asks for pathlen:{below}"
    return None


def _digital_signature(certificate, _below: int) -> str | None:
    usage = c.key_usage(certificate)
    if usage is None:
        return "has no KeyUsage extension; the guide asks for KeyUsage digitalSignature and keyCertSign"
    if not usage.digital_signature:
        return "lacks KeyUsage digitalSignature; the guide asks for digitalSignature and keyCertSign"
    return None


CA_RULES = (
    CaRule("capf-reserved-cn", "the common name must not contain CAPF- (reserved for the CAPF certificate)",
           ENFORCED, _reserved_cn, every_certificate=True),
    CaRule("ca-basic-constraints", "a CA certificate carries BasicConstraints CA:TRUE", ENFORCED, _ca_true),
    CaRule("ca-key-cert-sign", "a CA certificate's KeyUsage, when present, allows keyCertSign", ENFORCED,
           _key_cert_sign),
    CaRule("ca-path-length-chain", "a BasicConstraints pathlen allows the intermediate CAs uploaded below the "
                                   "certificate", ENFORCED, _path_covers_chain),
    CaRule("ca-path-length", "BasicConstraints pathlen is set to the number of intermediate CAs below the "
                             "certificate (pathlen:0 for a CA that issues end-entity certificates)", HARMLESS,
           _path_length_exact),
    CaRule("ca-digital-signature", "KeyUsage is present and lists digitalSignature and keyCertSign", HARMLESS,
           _digital_signature),
)
RULES_BY_ID = {rule.id: rule for rule in CA_RULES}


@dataclass(frozen=True)
class RuleWarning:
    """A harmless deviation that was accepted: which option, which certificate, which rule."""

    field: str
    fingerprint: str
    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


def _label(certificate) -> str:
    return c.common_name(certificate.subject) or certificate.subject.rfc4514_string()


def check_ca_rules(certificate, field: str = "certificate", *, below: int = 0, strict: bool = False,
                   as_ca: bool | None = None) -> list[RuleWarning]:
    """Apply ``CA_RULES`` to one certificate; return the warnings for harmless deviations.

    An enforced rule, or in ``strict`` mode any rule, that fails raises CertificateInputError naming
    ``field`` and the rule id. ``as_ca`` (default: whether the certificate says CA:TRUE) decides
    whether the CA rules apply; the reserved-name rule applies to every certificate."""
    ca = c.is_ca(certificate) if as_ca is None else as_ca
    warnings = []
    for rule in CA_RULES:
        if not (ca or rule.every_certificate):
            continue
        problem = rule.check(certificate, below)
        if problem is None:
            continue
        if rule.severity == ENFORCED or strict:
            raise CertificateInputError(field, f"({_label(certificate)}) {problem} [rule {rule.id}]")
        warnings.append(RuleWarning(field, c.fingerprint(certificate), rule.id,
                                    f"{field} ({_label(certificate)}) {problem} [rule {rule.id}: a harmless "
                                    f"deviation, accepted; {STRICT_OPTION} refuses it]"))
    return warnings


def _cas_below(certificate, cas: list, depth: int = 0) -> int:
    """How many CA certificates of ``cas`` chain below ``certificate`` (the longest such chain)."""
    if depth >= MAX_CHAIN_DEPTH:
        return 0
    best = 0
    for other in cas:
        if other is certificate or c.is_self_signed(other) or not c.signed_by(other, certificate):
            continue
        best = max(best, 1 + _cas_below(other, cas, depth + 1))
    return best


def check_upload_set(items, *, strict: bool = False) -> list[RuleWarning]:
    """Apply ``CA_RULES`` to certificates uploaded together, ``items`` being (certificate, field,
    as_ca) with ``as_ca`` None for "as the certificate says"; each CA's path length is judged
    against the CAs uploaded below it. Returns the warnings; raises on the first refusal."""
    items = list(items)
    cas = [certificate for certificate, _field_name, as_ca in items
           if (c.is_ca(certificate) if as_ca is None else as_ca)]
    warnings = []
    for certificate, field_name, as_ca in items:
        below = _cas_below(certificate, cas) if certificate in cas else 0
        warnings += check_ca_rules(certificate, field_name, below=below, strict=strict, as_ca=as_ca)
    return warnings


def check_ca_certificate(certificate, field: str = "certificate") -> None:
    """The CAPF certificate: every rule of ``CA_RULES`` holds (CA:TRUE, pathlen:0, KeyUsage
    digitalSignature + keyCertSign), since it serves TLS to the phones and signs their LSCs."""
    check_ca_rules(certificate, field, below=0, strict=True, as_ca=True)


def check_not_reserved(certificate, field: str = "certificate") -> None:
    """Refuse an uploaded certificate whose CN contains the reserved ``CAPF-`` prefix."""
    problem = _reserved_cn(certificate, 0)
    if problem is not None:
        raise CertificateInputError(field, f"{problem} [rule capf-reserved-cn]")


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


def check_trust_upload(certificate, field: str = "certificate", *, strict: bool = True) -> list[RuleWarning]:
    """Every rule for one certificate uploaded to a trust store by itself (a CA issuing end-entity
    certificates); returns the warnings."""
    return check_ca_rules(certificate, field, strict=strict)


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
    """Table 1's answer: which certificates go to which trust stores, and why; ``warnings`` name
    the harmless deviations from the CA rules that were accepted."""

    scenario: int
    reason: str
    uploads: list = _field(default_factory=list)  # (role, certificate, trust stores)
    warnings: list = _field(default_factory=list)


def table1(ca_root, https_certificate=None, intermediates=(), *, strict: bool = False) -> UploadPlan:
    """Decide from Table 1 what to upload for a third-party CA.

    1. root and HTTPS certificate are the same: the root;
    2. HTTPS certificate issued by that root: the root;
    3. HTTPS certificate issued by an intermediate that the root issued: the root;
    4. HTTPS certificate under the same root but not verifiable from it with what was given:
       the root and the HTTPS certificate.
    The root always goes to CAPF-trust and CallManager-trust, the HTTPS certificate to CAPF-trust.
    The root and the intermediates are checked against ``CA_RULES`` together, so a root's path
    length is judged against the intermediates given below it.
    """
    root_stores = ("capf-trust", "callmanager-trust")
    if not c.is_self_signed(ca_root):
        raise CertificateInputError("ca_root", "must be a self-signed root certificate")
    intermediates = list(intermediates)
    warnings = check_upload_set([(ca_root, "ca_root", True)]
                                + [(item, f"intermediates[{index}]", True) for index, item in enumerate(intermediates)],
                                strict=strict)
    root = [("ca_root", ca_root, root_stores)]
    if https_certificate is None:
        plan = UploadPlan(0, "no HTTPS certificate given: upload the CA root", root)
    elif c.fingerprint(https_certificate) == c.fingerprint(ca_root):
        plan = UploadPlan(1, "the CA root and the HTTPS certificate are the same: upload the CA root", root)
    elif c.signed_by(https_certificate, ca_root):
        plan = UploadPlan(2, "the HTTPS certificate is issued by the CA root: upload the CA root", root)
    elif any(c.signed_by(intermediate, ca_root) and c.signed_by(https_certificate, intermediate)
             for intermediate in intermediates):
        plan = UploadPlan(3, "the HTTPS certificate is issued by an intermediate CA of the CA root: "
                             "upload the CA root", root)
    else:
        plan = UploadPlan(
            4,
            "the HTTPS certificate differs from the CA root and cannot be verified from it alone: "
            "upload the CA root and the HTTPS certificate",
            root + [("https_certificate", https_certificate, ("capf-trust",))],
        )
    if https_certificate is not None:
        check_not_reserved(https_certificate, "https_certificate")
    plan.warnings.extend(warnings)
    return plan

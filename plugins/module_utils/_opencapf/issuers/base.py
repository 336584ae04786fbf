# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every online CA client offers, and the checks every issued LSC passes.

``submit(csr)`` answers with one outcome:

* ``Issued``: the CA signed it, and the certificate passed our checks (the CSR's key, KeyUsage
  digitalSignature + keyEncipherment, validity, a chain to the caller's trust anchors);
* ``Pending``: the CA will decide later; ``poll(reference, request)`` after ``retry_after`` seconds
  (the caller keeps the request: the issued certificate is checked against it);
* ``Rejected``: final: the CA denied the request, or it issued a certificate we refuse.

Anything that says nothing about the request itself (CA unreachable, TLS failure, wrong password,
an answer we cannot read) raises ``IssuerError``; its ``code`` names the failure for callers that
record it, its message says what to fix.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field as _field

from .. import csr as csr_module
from ..ca import certificates as c
from ..ca import rules
from ..errors import CertificateError, CodedError

DEFAULT_RETRY_AFTER = 60
MAX_RETRY_AFTER = 24 * 3600

# IssuerError codes.
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
TLS_HOSTNAME = "tls_hostname_mismatch"
TLS_UNTRUSTED = "tls_untrusted"
TLS_FAILED = "tls_failed"
AUTHENTICATION = "authentication_failed"
HTTP_ERROR = "http_error"
MALFORMED = "malformed_response"
UNSUPPORTED_KEY = "unsupported_key"
CONFIGURATION = "configuration"
# Rejected codes.
DENIED = "denied"
KEY_USAGE = "key_usage"
WRONG_KEY = "wrong_key"
UNTRUSTED_CHAIN = "untrusted_chain"
INVALID_CERTIFICATE = "invalid_certificate"


class IssuerError(CodedError):
    """The CA could not be asked, or its answer could not be used."""


@dataclass(frozen=True)
class Issued:
    """``chain`` runs from the LSC up to the trust anchor it chains to (both included)."""

    certificate: object
    chain: list = _field(default_factory=list)
    reference: str = ""

    @property
    def pem(self) -> str:
        return c.to_pem(self.certificate)

    @property
    def chain_pem(self) -> str:
        return "".join(c.to_pem(item) for item in self.chain)


@dataclass(frozen=True)
class Pending:
    reference: str
    retry_after: int = DEFAULT_RETRY_AFTER


@dataclass(frozen=True)
class Rejected:
    code: str
    reason: str
    reference: str = ""


def clamp_retry_after(seconds) -> int:
    return max(1, min(int(seconds), MAX_RETRY_AFTER))


def key_kind(request) -> str:
    """``rsa`` or ``ec`` for a verified request."""
    return csr_module.key_type(request.public_key())


class Issuer(abc.ABC):
    """An online CA. ``ec_supported`` says whether this CA path can sign EC keys."""

    kind = "issuer"
    ec_supported = True

    def check_key(self, request) -> None:
        """Refuse, before anything is sent, a key this CA path cannot certify."""
        kind = key_kind(request)
        if kind == "ec" and not self.ec_supported:
            raise IssuerError(
                UNSUPPORTED_KEY,
                f"{self.kind} CA path is configured for RSA keys only and cannot certify the phone's EC key; "
                "use key order rsa for phones enrolled through this CA, or enable EC for the CA path",
            )

    @abc.abstractmethod
    def submit(self, request_der: bytes, *, renewal: bool = False):
        """Send a verified PKCS#10 request (DER); return Issued, Pending or Rejected."""

    @abc.abstractmethod
    def poll(self, reference: str, request_der: bytes):
        """Ask again about a pending request; return Issued, Pending or Rejected."""

    def close(self) -> None:
        """Release connections."""


def load_request(request_der: bytes):
    """The request, verified with its own key (the phone's)."""
    try:
        return csr_module.verify(request_der, "certificate request")
    except csr_module.CsrError as exc:
        raise IssuerError(CONFIGURATION, str(exc)) from None


def check_issued(request, certificate, anchors, intermediates=(), *, reference: str = "", at=None):
    """Issued when ``certificate`` is an acceptable LSC for ``request``; Rejected saying why not."""
    if c.public_key_der(certificate.public_key()) != c.public_key_der(request.public_key()):
        return Rejected(WRONG_KEY, "the CA returned a certificate for a different public key than the request's",
                        reference)
    try:
        rules.check_lsc_key_usage(certificate, "issued certificate")
    except CertificateError as exc:
        return Rejected(KEY_USAGE, f"{exc}; refused (secure registration would fail)", reference)
    if c.is_ca(certificate):
        return Rejected(INVALID_CERTIFICATE, "the CA returned a CA certificate (BasicConstraints CA:TRUE) as the LSC",
                        reference)
    if not anchors:
        raise IssuerError(CONFIGURATION, "no trust certificates given: the CA's root must be in CAPF-trust")
    try:
        chain = rules.build_chain(certificate, anchors, intermediates, at=at)
    except CertificateError as exc:
        return Rejected(UNTRUSTED_CHAIN, f"issued certificate refused: {exc}", reference)
    return Issued(certificate, chain, reference)


def resolve(issuer: Issuer, outcome, request_der: bytes, budget_seconds: float, *, sleep=time.sleep,
            clock=time.monotonic):
    """Poll a Pending outcome, honouring each Retry-After, until it is final or the next wait would
    overrun ``budget_seconds``; return the last outcome (still Pending when the budget ran out)."""
    deadline = clock() + budget_seconds
    while isinstance(outcome, Pending) and clock() + outcome.retry_after <= deadline:
        sleep(outcome.retry_after)
        outcome = issuer.poll(outcome.reference, request_der)
    return outcome

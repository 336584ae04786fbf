# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every online CA client offers.

``submit(csr)`` answers with one outcome:

* ``Issued``: the CA signed it; the certificate is what the CA returned, not yet judged: the
  engine passes it through ``acceptance.check`` (the request's device name and key, KeyUsage,
  validity, a chain to CAPF-trust) before it is recorded or delivered;
* ``Pending``: the CA will decide later; ``poll(reference, request)`` after ``retry_after`` seconds;
* ``Rejected``: final: the CA denied the request.

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
from ..errors import CodedError

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
# Rejected code (a certificate the CA issued but we refuse has a code of acceptance.py).
DENIED = "denied"


class IssuerError(CodedError):
    """The CA could not be asked, or its answer could not be used."""


@dataclass(frozen=True)
class Issued:
    """What the CA returned: the certificate and the CA certificates it sent along (untrusted
    intermediates for ``acceptance.check``)."""

    certificate: object
    intermediates: list = _field(default_factory=list)
    reference: str = ""

    @property
    def pem(self) -> str:
        return c.to_pem(self.certificate)


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


def resolve(issuer: Issuer, outcome, request_der: bytes, budget_seconds: float, *, sleep=time.sleep,
            clock=time.monotonic):
    """Poll a Pending outcome, honouring each Retry-After, until it is final or the next wait would
    overrun ``budget_seconds``; return the last outcome (still Pending when the budget ran out)."""
    deadline = clock() + budget_seconds
    while isinstance(outcome, Pending) and clock() + outcome.retry_after <= deadline:
        sleep(outcome.retry_after)
        outcome = issuer.poll(outcome.reference, request_der)
    return outcome

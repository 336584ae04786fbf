# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Online CA over EST (RFC 7030): simpleenroll / simplereenroll / cacerts."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import email.utils
import re
import warnings

from ..ca import certificates as c
from ..dependencies import pkcs7, require
from ..errors import ValidationError
from . import base
from .transport import Connection, HttpClient, content_type

WELL_KNOWN = "/.well-known/est"
PKCS7_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_LABEL = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_OPERATIONS = ("simpleenroll", "simplereenroll")


def check_label(value, field: str = "profile_label"):
    """An EST label: one URI path segment (letters, digits, . _ ~ -), or empty for none."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ValidationError(field, "must be 1\u201364 letters, digits, '.', '_', '~' or '-'", value)
    return value


def retry_after(header, now=None) -> int:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped to 1 s\u201324 h."""
    if header is None or not str(header).strip():
        return base.DEFAULT_RETRY_AFTER
    text = str(header).strip()
    if text.isdigit():
        return base.clamp_retry_after(int(text))
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return base.DEFAULT_RETRY_AFTER
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return base.clamp_retry_after((moment - now).total_seconds())


def parse_certs_only(body: bytes, what: str) -> list:
    """The certificates of a PKCS#7 certs-only answer: base64 (RFC 7030/8951), PEM or DER."""
    require("cryptography")
    data = bytes(body).strip()
    if data.startswith(b"-----BEGIN"):
        # Any armour label: AD CS wraps its PKCS#7 in "CERTIFICATE" armour.
        data = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
    try:
        if not data.startswith(b"\x30"):
            data = base64.b64decode(b"".join(data.split()), validate=True)
        with warnings.catch_warnings():  # CAs often write the certificate SET unsorted (BER)
            warnings.simplefilter("ignore", UserWarning)
            certificates = pkcs7.load_der_pkcs7_certificates(data)
    except (ValueError, binascii.Error) as exc:
        raise base.IssuerError(base.MALFORMED, f"{what} is not a PKCS#7 certs-only structure: {exc}") from None
    if not certificates:
        raise base.IssuerError(base.MALFORMED, f"{what} holds no certificate")
    return list(certificates)


def _excerpt(response) -> str:
    text = re.sub(r"\s+", " ", response.text or "")[:200]
    return "".join(ch for ch in text if ch.isprintable()).strip()


class EstIssuer(base.Issuer):
    """An EST-capable CA. ``label`` is the certificate enrolment profile label."""

    kind = "EST"

    def __init__(self, connection: Connection, label=None, *, ec_supported: bool = True):
        self.label = check_label(label)
        self.ec_supported = ec_supported
        self.client = HttpClient(connection, "EST CA")

    def _path(self, operation: str) -> str:
        return WELL_KNOWN + (f"/{self.label}" if self.label else "") + "/" + operation

    def cacerts(self) -> list:
        """The CA certificates the EST server distributes (used as untrusted intermediates)."""
        response = self.client.request("GET", self._path("cacerts"))
        if response.status_code != 200:
            raise base.IssuerError(base.HTTP_ERROR, f"EST CA answered cacerts with HTTP {response.status_code}")
        self._check_type(response, "cacerts")
        return parse_certs_only(response.content, "EST cacerts answer")

    def submit(self, request_der: bytes, *, renewal: bool = False):
        request = base.load_request(request_der)
        self.check_key(request)
        operation = _OPERATIONS[1 if renewal else 0]
        return self._enrol(request, request_der, operation, operation)

    def poll(self, reference: str, request_der: bytes):
        """EST has no request id: the client sends the same request again (RFC 7030 4.2.3);
        the reference names the operation."""
        if reference not in _OPERATIONS:
            raise base.IssuerError(base.CONFIGURATION, f"EST pending reference {reference!r} is not one this client made")
        return self._enrol(base.load_request(request_der), request_der, reference, reference)

    def _enrol(self, request, request_der: bytes, operation: str, reference: str):
        body = base64.encodebytes(bytes(request_der))
        response = self.client.request(
            "POST", self._path(operation), data=body,
            headers={"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"},
        )
        status = response.status_code
        if status == 202:
            return base.Pending(reference, retry_after(response.headers.get("Retry-After")))
        if status == 404:
            raise base.IssuerError(base.CONFIGURATION, f"EST CA has no {operation} service at {self._path(operation)} "
                                                       "(HTTP 404): check the profile label")
        if 400 <= status < 500:
            detail = _excerpt(response)
            return base.Rejected(base.DENIED, f"EST CA refused the request (HTTP {status})"
                                 + (f": {detail}" if detail else ""), reference)
        if status != 200:
            raise base.IssuerError(base.HTTP_ERROR, f"EST CA answered {operation} with HTTP {status}")
        self._check_type(response, operation)
        certificates = parse_certs_only(response.content, f"EST {operation} answer")
        wanted = c.public_key_der(request.public_key())
        leaves = [item for item in certificates if c.public_key_der(item.public_key()) == wanted]
        leaf = leaves[0] if leaves else certificates[0]
        others = [item for item in certificates if item is not leaf]
        return base.Issued(leaf, others + self._cacerts_or_none(), reference)

    def _cacerts_or_none(self) -> list:
        try:
            return self.cacerts()
        except base.IssuerError:
            return []  # the acceptance check says what is missing

    def _check_type(self, response, operation: str) -> None:
        if content_type(response) not in PKCS7_TYPES:
            raise base.IssuerError(
                base.MALFORMED,
                f"EST CA answered {operation} with content type {content_type(response) or 'none'!r}, "
                "expected application/pkcs7-mime",
            )

    def close(self) -> None:
        self.client.close()

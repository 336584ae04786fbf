# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Online CA over Microsoft AD CS web enrolment (``/certsrv``).

The pages are localised, so outcomes are read from their structure, never from their wording:
a ``certnew.cer?ReqID=N`` link means issued; an HRESULT (``0x8…``) means denied; a request id
without either means pending (manager approval), picked up later from ``certnew.cer``, which
returns the certificate once issued. HTTP status and content decide everything else.
"""

from __future__ import annotations

import base64
import html
import re

from ..ca import certificates as c
from ..errors import CertificateError, ValidationError
from . import base
from .est import parse_certs_only
from .transport import Connection, HttpClient

CERTSRV = "/certsrv"
_ISSUED_LINK = re.compile(r"certnew\.cer\?ReqID=(\d+)", re.I)
_REQUEST_ID = re.compile(r"ReqID=(\d+)", re.I)
_LOC_ID_NUMBER = re.compile(r"</LocID>\s*(\d+)", re.I)
_HRESULT = re.compile(r"\b0x(8[0-9a-f]{7})\b", re.I)
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")
_TEMPLATE = re.compile(r"[^\x00-\x1f\x7f:]{1,64}")
BAD_REQUEST_STATUS = 0x80094003  # CERTSRV_E_BAD_REQUESTSTATUS: not issued (yet)
# Why AD CS said no, in our words (its own text is in the server's language).
HRESULTS = {
    0x80094001: "CERTSRV_E_BAD_REQUESTSUBJECT: the request subject is not acceptable",
    0x80094004: "CERTSRV_E_PROPERTY_EMPTY: a required request property is missing",
    0x80094011: "CERTSRV_E_ENROLL_DENIED: enrolment was denied",
    0x80094012: "CERTSRV_E_TEMPLATE_DENIED: the template's permissions do not allow this account to enrol",
    0x80094800: "CERTSRV_E_UNSUPPORTED_CERT_TYPE: the CA does not offer this certificate template",
    0x80094801: "CERTSRV_E_NO_CERT_TYPE: the request names no certificate template",
    BAD_REQUEST_STATUS: "CERTSRV_E_BAD_REQUESTSTATUS: the request is not in the issued state",
}


def check_template(value, field: str = "template") -> str:
    """A certificate template name: 1\u201364 characters, no control characters or ':'."""
    if not isinstance(value, str) or not _TEMPLATE.fullmatch(value.strip()):
        raise ValidationError(field, "must be the AD CS certificate template name (1\u201364 characters, no ':')", value)
    return value.strip()


def visible_text(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", page)))).strip()


def hresult(page: str):
    """The first HRESULT error code on a page, as an int, or None."""
    match = _HRESULT.search(page)
    return int(match.group(1), 16) if match else None


def pending_request_id(page: str):
    """The request id of a pending page, found without reading its words: a ReqID parameter, the
    number after a LocID element, or the only number in the visible text."""
    for pattern in (_REQUEST_ID, _LOC_ID_NUMBER):
        match = pattern.search(page)
        if match:
            return match.group(1)
    numbers = set(re.findall(r"(?<![\w.])(\d{1,10})(?![\w])", visible_text(page)))
    return numbers.pop() if len(numbers) == 1 else None


def _denial(code: int, page: str) -> str:
    known = HRESULTS.get(code, "")
    text = visible_text(page)
    position = text.lower().find(f"0x{code:08x}")
    detail = ""
    if position >= 0:
        start = max(0, position - 120)
        detail = text[start:position + 100]
        if start and " " in detail:
            detail = detail.split(" ", 1)[1]  # no word cut in half
        detail = detail.strip()
    return (f"AD CS denied the request (HRESULT 0x{code:08X}" + (f", {known}" if known else "") + ")"
            + (f"; CA said: {detail}" if detail else ""))


def certificate_in(response):
    """The certificate in a certnew.cer answer (base64/PEM or DER), or None if there is none."""
    body = response.content
    match = _PEM_CERTIFICATE.search(response.text) if b"-----BEGIN CERTIFICATE-----" in body else None
    try:
        if match:
            return c.load_pem_certificate(match.group(0), "AD CS certificate")
        if body[:1] == b"\x30":
            return c.load_der_certificate(body, "AD CS certificate")
    except CertificateError as exc:
        raise base.IssuerError(base.MALFORMED, f"AD CS returned a malformed certificate: {exc}") from None
    return None


class AdcsIssuer(base.Issuer):
    """Microsoft AD CS web enrolment with a certificate template.

    ``ec_supported`` is False by default: Microsoft templates are commonly RSA-only, so EC keys are
    refused before submission unless the template is known to accept them."""

    kind = "Microsoft AD CS"

    def __init__(self, connection: Connection, template: str, *, ec_supported: bool = False):
        self.template = check_template(template)
        self.ec_supported = ec_supported
        self.client = HttpClient(connection, "AD CS")

    def submit(self, request_der: bytes, *, renewal: bool = False):
        request = base.load_request(request_der)
        self.check_key(request)
        pem = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(request_der)).decode("ascii") \
            + "-----END CERTIFICATE REQUEST-----\n"
        form = {
            "Mode": "newreq", "CertRequest": pem, "CertAttrib": f"CertificateTemplate:{self.template}\r\n",
            "TargetStoreFlags": "0", "SaveCert": "yes", "ThumbPrint": "",
        }
        response = self.client.request("POST", CERTSRV + "/certfnsh.asp", data=form)
        self._check_status(response, "certfnsh.asp")
        page = response.text
        issued = _ISSUED_LINK.search(page)
        if issued:
            return self._retrieve(issued.group(1))
        code = hresult(page)
        if code is not None:
            return base.Rejected(base.DENIED, _denial(code, page))
        request_id = pending_request_id(page)
        if request_id is not None:
            return base.Pending(request_id)
        raise base.IssuerError(base.MALFORMED, "AD CS answered the request with a page that shows neither a "
                                               "certificate link, a request id nor an error code")

    def poll(self, reference: str, request_der: bytes):
        if not str(reference).isdigit():
            raise base.IssuerError(base.CONFIGURATION, f"AD CS pending reference {reference!r} is not a request id")
        base.load_request(request_der)
        return self._retrieve(str(reference), polling=True)

    def _retrieve(self, request_id: str, *, polling: bool = False):
        response = self.client.request("GET", f"{CERTSRV}/certnew.cer", params={"ReqID": request_id, "Enc": "b64"})
        self._check_status(response, "certnew.cer")
        certificate = certificate_in(response)
        if certificate is None:
            code = hresult(response.text)
            still_pending = code == BAD_REQUEST_STATUS or (
                code is None and pending_request_id(response.text) == request_id)
            if polling and still_pending:
                return base.Pending(request_id)
            if code is not None:
                return base.Rejected(base.DENIED, _denial(code, response.text), request_id)
            raise base.IssuerError(base.MALFORMED, f"AD CS certnew.cer for request {request_id} returned no certificate "
                                                   "and no error code")
        return base.Issued(certificate, self._chain(request_id), request_id)

    def _chain(self, request_id: str) -> list:
        response = self.client.request("GET", f"{CERTSRV}/certnew.p7b", params={"ReqID": request_id, "Enc": "b64"})
        if response.status_code != 200:
            return []  # the acceptance check says what is missing
        try:
            return parse_certs_only(response.content, "AD CS certnew.p7b answer")
        except base.IssuerError:
            return []

    def _check_status(self, response, page: str) -> None:
        if response.status_code == 403:
            raise base.IssuerError(base.AUTHENTICATION, f"AD CS refused access to {page} (HTTP 403): the account may "
                                                        "lack enrol permission on the web enrolment pages")
        if response.status_code != 200:
            raise base.IssuerError(base.HTTP_ERROR, f"AD CS answered {page} with HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()

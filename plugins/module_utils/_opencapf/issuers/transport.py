# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTPS towards an online CA: trust only the caller's certificates, require the configured host
name, optional client certificate, and turn every transport failure into a specific IssuerError."""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field as _field

from ..ca import certificates as c
from ..dependencies import HTTPAdapter, HttpNtlmAuth, require, requests
from ..errors import CapfError, CertificateError, ValidationError
from ..files import check_private_file
from ..vocabulary import check_port
from . import base

AUTH_METHODS = ("basic", "ntlm")
MAX_RESPONSE_BYTES = 1024 * 1024
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
IP_MISMATCH = 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


@dataclass(frozen=True)
class Connection:
    """Plain settings for one online CA (no store needed)."""

    hostname: str
    port: int = 443
    trust_pems: tuple = ()
    username: str | None = None
    password: str | None = _field(default=None, repr=False)
    auth: str = "basic"
    client_certificate: str | None = None
    client_key: str | None = None
    timeout: float = 30.0


def check_hostname(value, field: str = "hostname") -> str:
    """A DNS name or an IP address, nothing else (no scheme, port or path)."""
    text = str(value or "").strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise ValidationError(field, "must be the CA's host name (as in its HTTPS certificate) or an IP address",
                              value)
    return text


def trust_certificates(trust_pems) -> list:
    """The trust certificates given as PEM texts (each may hold several) or certificate objects."""
    if isinstance(trust_pems, (str, bytes)) or hasattr(trust_pems, "public_bytes"):
        trust_pems = [trust_pems]
    certificates = []
    try:
        for index, item in enumerate(trust_pems or ()):
            if hasattr(item, "public_bytes"):
                certificates.append(item)
            else:
                certificates.extend(c.load_pem_certificates(item, f"trust_pems[{index}]"))
    except CertificateError as exc:
        raise base.IssuerError(base.CONFIGURATION, str(exc)) from None
    return certificates


def tls_context(connection: Connection) -> ssl.SSLContext:
    """Verify the CA against the given trust certificates only, with host-name checking."""
    trust = "".join(c.to_pem(certificate) for certificate in trust_certificates(connection.trust_pems))
    if not trust:
        raise base.IssuerError(base.CONFIGURATION,
                               "no trust certificates given: put the CA's root (or its HTTPS certificate) in CAPF-trust")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=trust)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.hostname_checks_common_name = True
    # A trusted HTTPS certificate that is not a root (Table 1, last row) ends the chain by itself.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if bool(connection.client_certificate) != bool(connection.client_key):
        raise base.IssuerError(base.CONFIGURATION, "client_certificate and client_key must be given together")
    if connection.client_certificate:
        try:
            check_private_file(connection.client_key, "client key file")
            context.load_cert_chain(connection.client_certificate, connection.client_key)
        except (OSError, ssl.SSLError, CapfError) as exc:
            raise base.IssuerError(base.CONFIGURATION, f"cannot use the client certificate and key: {exc}") from None
    return context


class _TrustAdapter(HTTPAdapter):
    """Hands our SSLContext to urllib3 and keeps requests from adding any other trust."""

    def __init__(self, context, **kwargs):
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self._context
        return super().init_poolmanager(*args, **kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host, pool = super().build_connection_pool_key_attributes(request, True, None)
        pool["ssl_context"] = self._context
        return host, pool

    def cert_verify(self, conn, url, verify, cert):
        conn.cert_reqs = "CERT_REQUIRED"


def _causes(exc):
    """Every exception reachable from ``exc`` (causes, contexts, wrapped reasons and args)."""
    seen, stack = [], [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or any(item is known for known in seen):
            continue
        seen.append(item)
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return seen


class HttpClient:
    """One requests session bound to one CA."""

    def __init__(self, connection: Connection, what: str):
        require("requests")
        self.connection = connection
        self.what = what
        self.hostname = check_hostname(connection.hostname)
        self.port = check_port(connection.port)
        if connection.auth not in AUTH_METHODS:
            raise ValidationError("auth", "must be one of " + ", ".join(AUTH_METHODS), connection.auth)
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = _TrustAdapter(tls_context(connection))
        self.session.mount("https://", adapter)
        if connection.username:
            if connection.auth == "ntlm":
                require("requests-ntlm")
                self.session.auth = HttpNtlmAuth(connection.username, connection.password or "")
            else:
                self.session.auth = (connection.username, connection.password or "")

    @property
    def base_url(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"https://{host}:{self.port}"

    def request(self, method: str, path: str, **kwargs):
        """Send one request; a 401 or any transport failure raises a specific IssuerError."""
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=self.connection.timeout, allow_redirects=False,
                                            **kwargs)
            body = response.content
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise base.IssuerError(base.MALFORMED, f"{self.what} answered {url} with more than {MAX_RESPONSE_BYTES} bytes")
        if response.status_code == 401:
            user = self.connection.username
            raise base.IssuerError(
                base.AUTHENTICATION,
                f"{self.what} refused the credentials (HTTP 401) for "
                + (f"user {user!r}: check the username and password" if user else "an anonymous request: "
                   "configure a username and password"),
            )
        return response

    def _transport_error(self, exc):
        where = f"{self.what} at {self.hostname}:{self.port}"
        causes = _causes(exc)
        for cause in causes:
            if isinstance(cause, ssl.SSLCertVerificationError):
                if cause.verify_code in (HOSTNAME_MISMATCH, IP_MISMATCH):
                    return base.IssuerError(
                        base.TLS_HOSTNAME,
                        f"TLS host name mismatch: the HTTPS certificate of {where} does not name {self.hostname!r} "
                        "in its subject alternative names or common name; configure the host name the certificate "
                        "carries",
                    )
                return base.IssuerError(
                    base.TLS_UNTRUSTED,
                    f"the HTTPS certificate of {where} is not trusted ({cause.verify_message}); "
                    "upload the CA root (and, per Table 1, the HTTPS certificate) to CAPF-trust",
                )
        if isinstance(exc, requests.exceptions.Timeout):
            return base.IssuerError(base.TIMEOUT, f"{where} did not answer within {self.connection.timeout:g} s")
        for cause in causes:
            if isinstance(cause, ssl.SSLError):
                return base.IssuerError(
                    base.TLS_FAILED,
                    f"TLS handshake with {where} failed ({cause.reason or cause.__class__.__name__}); "
                    "if the CA requires a client certificate, configure client_certificate and client_key",
                )
        for cause in causes:
            if isinstance(cause, (ConnectionResetError, BrokenPipeError)):
                return base.IssuerError(
                    base.TLS_FAILED,
                    f"{where} closed the connection during the TLS handshake or request; if the CA requires a "
                    "client certificate, configure client_certificate and client_key",
                )
        return base.IssuerError(base.UNREACHABLE, f"{where} is unreachable: {_short(exc)}")

    def close(self) -> None:
        self.session.close()


def _short(exc) -> str:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return exc.__class__.__name__


def content_type(response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()

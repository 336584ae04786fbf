"""A test enterprise PKI and real HTTPS servers on 127.0.0.1 that behave like third-party CAs.

* ``EnterprisePki``: a root CA, an issuing CA under it, TLS server certificates (right or wrong names)
  and client certificates, and CSR signing that copies the requested extensions, or answers with
  one of the ``DEFECTS`` (another device's CN or subjectAltName, another key, CA:TRUE, expired or
  not yet valid, no KeyUsage, a signature by a key outside the trusted chain) to test refusal.
* ``EstServer``: RFC 7030 endpoints with basic auth, profile labels, 202 + Retry-After, 401,
  malformed answers, optional client-certificate authentication, and a ``defect`` to answer with.
* ``AdcsServer``: an AD CS web-enrolment look-alike (certfnsh.asp, certnew.cer, certnew.p7b) with
  templates, issued / pending / denied flows, basic or NTLM authentication, and English, German or
  Japanese pages.

Each server runs ``ThreadingHTTPServer`` in a daemon thread on an ephemeral port; every socket
has a timeout so a stuck client cannot hang the suite.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import ipaddress
import itertools
import os
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SOCKET_TIMEOUT = 10
USERNAME, PASSWORD = "capf", "s3cret-pw"
OTHER_DEVICE = "SEP0000DEADBEEF"
# What a CA may do wrong when it answers a phone's request, named by the refusal code it must get.
DEFECTS = ("wrong_key", "wrong_subject", "wrong_subject_alt_name", "is_ca", "missing_key_usage", "not_yet_valid",
           "expired", "untrusted_chain")


def _name(common_name, organization="Example Enterprise"):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "NZ")])


def _usage(**flags):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{flag: bool(flags.get(flag)) for flag in names})


def pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class EnterprisePki:
    """Root CA (pathlen 1) \u2192 issuing CA (pathlen 0) \u2192 LSCs; the root also signs TLS certificates."""

    def __init__(self, label="Example"):
        self.now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(f"{label} Root CA", self.root_key, None, 1)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = self._ca(f"{label} Issuing CA", self.issuing_key, (self.root, self.root_key), 0)
        # Signs under the issuing CA's name without being it: a chain no trust anchor vouches for.
        self.impostor_key = ec.generate_private_key(ec.SECP256R1())
        self.stranger_keys = {"ec": ec.generate_private_key(ec.SECP256R1()),
                              "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}

    def _builder(self, subject, public_key, issuer_name, days=365, start=None):
        start = start or self.now
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=days))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))

    def _aki(self, issuer_certificate):
        ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _ca(self, common_name, key, issuer, path_length):
        subject = _name(common_name)
        builder = self._builder(subject, key.public_key(), issuer[0].subject if issuer else subject, 3650)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        builder = builder.add_extension(_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                                        critical=True)
        if issuer:
            builder = builder.add_extension(self._aki(issuer[0]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    def _leaf(self, subject, public_key, issuer, key_usage, eku, san=None, extra=(), *, ca=False, start=None,
              days=365):
        builder = self._builder(subject, public_key, issuer[0].subject, days, start)
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        builder = builder.add_extension(self._aki(issuer[0]), critical=False)
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        for extension in extra:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        return builder.sign(issuer[1], hashes.SHA256())

    def server_certificate(self, names=("localhost",), addresses=("127.0.0.1",)):
        """A TLS server certificate (and key) issued by the root, with these SANs (none when both are
        empty: then the first name, or "ca-server", is only the common name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        if not addresses and names and names[0].startswith("cn:"):
            names, san = (names[0][3:],), None
        certificate = self._leaf(_name(names[0] if names else "ca-server"), key.public_key(),
                                 (self.root, self.root_key), _usage(digital_signature=True),
                                 [ExtendedKeyUsageOID.SERVER_AUTH], san)
        return certificate, key

    def client_certificate(self, common_name="capf.example.test"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._leaf(_name(common_name), key.public_key(), (self.root, self.root_key),
                                 _usage(digital_signature=True), [ExtendedKeyUsageOID.CLIENT_AUTH],
                                 [x509.DNSName(common_name)])
        return certificate, key

    def sign_request(self, request, *, key_usage=True, defect=None):
        """An LSC for a CSR, signed by the issuing CA, with the CSR's requested extensions (the
        KeyUsage left out when ``key_usage`` is False), or with one of the ``DEFECTS``."""
        assert defect in DEFECTS + (None,), defect
        try:
            requested = request.extensions
        except x509.ExtensionNotFound:
            requested = []
        skip = (x509.BasicConstraints, x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier, x509.KeyUsage)
        if defect == "wrong_subject_alt_name":
            skip += (x509.SubjectAlternativeName,)
        extra = [e for e in requested if not isinstance(e.value, skip)]
        is_ec = isinstance(request.public_key(), ec.EllipticCurvePublicKey)
        usage = None
        if key_usage and defect != "missing_key_usage":
            usage = _usage(digital_signature=True, key_encipherment=not is_ec, key_agreement=is_ec)
        subject, public_key = request.subject, request.public_key()
        if defect == "wrong_subject":
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OTHER_DEVICE)]
                                + [item for item in request.subject if item.oid != NameOID.COMMON_NAME])
        if defect == "wrong_key":
            public_key = self.stranger_keys["ec" if is_ec else "rsa"].public_key()
        san = None
        if defect == "wrong_subject_alt_name":
            san = [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OTHER_DEVICE)]))]
        start = {"not_yet_valid": self.now + dt.timedelta(days=2),
                 "expired": self.now - dt.timedelta(days=30)}.get(defect)
        signer = (self.issuing, self.impostor_key if defect == "untrusted_chain" else self.issuing_key)
        return self._leaf(subject, public_key, signer, usage, None, san, extra, ca=defect == "is_ca", start=start,
                          days=10 if defect == "expired" else 365)

    def write_files(self, directory, certificate, key, *, chain=()):
        """Write a certificate (plus chain) and its 0600 key; return the two paths."""
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, f"{certificate.serial_number:x}")
        with open(stem + ".crt", "w", encoding="ascii") as handle:
            handle.write(pem(certificate) + "".join(pem(item) for item in chain))
        descriptor = os.open(stem + ".key", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key_pem(key))
        return stem + ".crt", stem + ".key"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler, context, owner):
        self.context = context
        self.owner = owner
        super().__init__(("127.0.0.1", 0), handler)

    def get_request(self):
        sock, address = self.socket.accept()
        sock.settimeout(SOCKET_TIMEOUT)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address):
        self.owner.errors.append(client_address)  # failed handshakes are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.request.do_handshake()
        super().setup()

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    @property
    def state(self):
        return self.server.owner

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body=b"", content_type="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def basic_auth_ok(self) -> bool:
        if self.state.username is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _sep, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.state.username, self.state.password)

    def deny_auth(self, scheme="Basic realm=\"ca\""):
        self.reply(401, "authentication required", headers={"WWW-Authenticate": scheme})


class HttpsCa:
    """Common part: a TLS server in a thread. ``client_ca`` makes client certificates mandatory."""

    handler = _Handler

    def __init__(self, pki, tmp_dir, *, names=("localhost",), addresses=("127.0.0.1",), client_ca=None,
                 username="capf", password="s3cret-pw"):
        self.pki = pki
        self.username, self.password = username, password
        self.errors = []
        self.log = []
        certificate, key = pki.server_certificate(names, addresses)
        self.certificate = certificate
        cert_path, key_path = pki.write_files(tmp_dir, certificate, key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=pem(client_ca))
        self.server = _Server(self.handler, context, self)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=SOCKET_TIMEOUT)


def _certs_only(certificates) -> bytes:
    der = pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    return base64.encodebytes(der)


class _EstHandler(_Handler):
    def route(self):
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if parts[1:3] != [".well-known", "est"] or len(parts) not in (4, 5):
            return None, None
        label = parts[3] if len(parts) == 5 else None
        return label, parts[-1]

    def do_GET(self):  # noqa: N802  (http.server naming)
        label, operation = self.route()
        if operation != "cacerts" or not self.state.label_ok(label):
            return self.reply(404, "no such EST resource")
        return self.reply(200, _certs_only([self.state.pki.issuing, self.state.pki.root]),
                          "application/pkcs7-mime", {"Content-Transfer-Encoding": "base64"})

    def do_POST(self):  # noqa: N802
        label, operation = self.route()
        body = self.body()
        state = self.state
        state.log.append((operation, label, self.headers.get("Authorization", "")[:6]))
        if operation not in ("simpleenroll", "simplereenroll") or not state.label_ok(label):
            return self.reply(404, "no such EST resource")
        if not self.basic_auth_ok():
            return self.deny_auth()
        if self.headers.get("Content-Type", "").split(";")[0] != "application/pkcs10":
            return self.reply(415, "expected application/pkcs10")
        try:
            request = x509.load_der_x509_csr(base64.b64decode(body))
        except ValueError:
            return self.reply(400, "bad request: not a base64 PKCS#10")
        if not request.is_signature_valid:
            return self.reply(400, "bad request: proof of possession failed")
        state.seen[request.public_bytes(serialization.Encoding.DER)] = \
            state.seen.get(request.public_bytes(serialization.Encoding.DER), 0) + 1
        if state.seen[request.public_bytes(serialization.Encoding.DER)] <= state.pending_first:
            return self.reply(202, "", headers={"Retry-After": str(state.retry_after)})
        if state.deny:
            return self.reply(403, "request refused by CA policy")
        if state.malformed:
            return self.reply(200, "this is not PKCS#7", "application/pkcs7-mime")
        certificate = state.pki.sign_request(request, key_usage=state.key_usage, defect=state.defect)
        state.issued.append(certificate)
        return self.reply(200, _certs_only([certificate]), "application/pkcs7-mime; smime-type=certs-only",
                          {"Content-Transfer-Encoding": "base64"})


class EstServer(HttpsCa):
    """An EST CA. ``labels``: accepted profile labels (None = only the unlabelled path)."""

    handler = _EstHandler

    def __init__(self, pki, tmp_dir, *, labels=("phones",), allow_unlabelled=True, **kwargs):
        super().__init__(pki, tmp_dir, **kwargs)
        self.labels = set(labels or ())
        self.allow_unlabelled = allow_unlabelled
        self.pending_first = 0
        self.retry_after = 1
        self.deny = False
        self.malformed = False
        self.key_usage = True
        self.defect = None
        self.seen = {}
        self.issued = []

    def label_ok(self, label):
        return (label is None and self.allow_unlabelled) or label in self.labels


# Pages in three languages. Outcomes show only in structure (links, ReqID, HRESULT codes).
PAGES = {
    "en": {"title": "Microsoft Active Directory Certificate Services",
           "issued": "The certificate you requested was issued to you.", "download": "Download certificate",
           "pending": "Your certificate request has been received. However, you must wait for an administrator "
                      "to issue the certificate you requested.", "reqid": "Your Request Id is",
           "denied": "Your certificate request was denied.", "error": "An unexpected error has occurred:",
           "still": "The certificate is still pending."},
    "de": {"title": "Microsoft Active Directory-Zertifikatdienste",
           "issued": "Das angeforderte Zertifikat wurde ausgestellt.", "download": "Zertifikat herunterladen",
           "pending": "Ihre Zertifikatanforderung wurde empfangen. Sie m\u00fcssen jedoch warten, bis ein "
                      "Administrator das angeforderte Zertifikat ausstellt.", "reqid": "Ihre Anforderungs-ID ist",
           "denied": "Ihre Zertifikatanforderung wurde verweigert.", "error": "Unerwarteter Fehler:",
           "still": "Das Zertifikat steht noch aus."},
    "ja": {"title": "Microsoft Active Directory \u8a3c\u660e\u66f8\u30b5\u30fc\u30d3\u30b9",
           "issued": "\u8981\u6c42\u3057\u305f\u8a3c\u660e\u66f8\u306f\u767a\u884c\u3055\u308c\u307e\u3057\u305f\u3002",
           "download": "\u8a3c\u660e\u66f8\u306e\u30c0\u30a6\u30f3\u30ed\u30fc\u30c9",
           "pending": "\u8a3c\u660e\u66f8\u306e\u8981\u6c42\u3092\u53d7\u3051\u4ed8\u3051\u307e\u3057\u305f\u3002"
                      "\u7ba1\u7406\u8005\u304c\u767a\u884c\u3059\u308b\u307e\u3067\u304a\u5f85\u3061\u304f\u3060"
                      "\u3055\u3044\u3002", "reqid": "\u8981\u6c42 ID:",
           "denied": "\u8a3c\u660e\u66f8\u306e\u8981\u6c42\u306f\u62d2\u5426\u3055\u308c\u307e\u3057\u305f\u3002",
           "error": "\u4e88\u671f\u3057\u306a\u3044\u30a8\u30e9\u30fc:",
           "still": "\u8a3c\u660e\u66f8\u306f\u4fdd\u7559\u4e2d\u3067\u3059\u3002"},
}
HRESULT_TEXT = {
    0x80094800: "(-2146875392 CERTSRV_E_UNSUPPORTED_CERT_TYPE)",
    0x80094011: "(-2146877423 CERTSRV_E_ENROLL_DENIED)",
    0x80094003: "(-2146877437 CERTSRV_E_BAD_REQUESTSTATUS)",
}


class _AdcsHandler(_Handler):
    def page(self, body_html):
        words = self.state.words
        return (f"<html lang=\"{self.state.language}\"><head><meta charset=\"utf-8\"><title>{words['title']}"
                f"</title></head><body><font ID=locPageTitle>{words['title']}</font><hr>{body_html}</body></html>")

    def error_page(self, message, code):
        return self.page(f"<P ID=locInfo>{html.escape(message)}</P><P>{self.state.words['error']} "
                         f"0x{code:08x} {HRESULT_TEXT.get(code, '')}</P>")

    def authorised(self) -> bool:
        if self.state.ntlm:
            return self.ntlm_ok()
        if not self.basic_auth_ok():
            self.deny_auth()
            return False
        return True

    def ntlm_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        if getattr(self, "ntlm_done", False):
            return True
        if not header.startswith("NTLM "):
            self.deny_auth("NTLM")
            return False
        token = base64.b64decode(header[5:])
        self.state.ntlm_messages.append(token[8:9])
        if token[8:9] == b"\x01":
            import spnego  # pylint: disable=import-outside-toplevel
            self.ntlm_context = spnego.server(protocol="ntlm")
            challenge = self.ntlm_context.step(token)
            self.deny_auth("NTLM " + base64.b64encode(challenge).decode())
            return False
        try:
            self.ntlm_context.step(token)
        except Exception:  # pylint: disable=broad-exception-caught
            self.deny_auth("NTLM")
            return False
        self.ntlm_done = True  # pylint: disable=attribute-defined-outside-init
        self.state.ntlm_users.append(str(self.ntlm_context.client_principal))
        return True

    def do_GET(self):  # noqa: N802
        if not self.authorised():
            return None
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        request_id = int((query.get("ReqID") or ["0"])[0]) if (query.get("ReqID") or ["x"])[0].isdigit() else 0
        entry = self.state.requests.get(request_id)
        if parts.path == "/certsrv/certnew.cer":
            if entry is None:
                return self.reply(200, self.error_page("?", 0x80094003), "text/html; charset=utf-8")
            if entry["status"] == "issued":
                return self.reply(200, pem(entry["certificate"]), "application/pkix-cert")
            if entry["status"] == "pending":
                return self.reply(200, self.error_page(self.state.words["still"], 0x80094003),
                                  "text/html; charset=utf-8")
            return self.reply(200, self.error_page(self.state.words["denied"], 0x80094011),
                              "text/html; charset=utf-8")
        if parts.path == "/certsrv/certnew.p7b" and entry and entry["status"] == "issued":
            der = pkcs7.serialize_certificates([entry["certificate"], self.state.pki.issuing, self.state.pki.root],
                                               serialization.Encoding.DER)
            # As AD CS does: base64 PKCS#7 inside CERTIFICATE armour.
            data = ("-----BEGIN CERTIFICATE-----\r\n" + base64.encodebytes(der).decode().replace("\n", "\r\n")
                    + "-----END CERTIFICATE-----\r\n")
            return self.reply(200, data, "application/x-pkcs7-certificates")
        return self.reply(404, "not found")

    def do_POST(self):  # noqa: N802
        body = self.body()
        if not self.authorised():
            return None
        state = self.state
        if urllib.parse.urlsplit(self.path).path != "/certsrv/certfnsh.asp":
            return self.reply(404, "not found")
        form = urllib.parse.parse_qs(body.decode("utf-8"))
        state.forms.append(form)
        attributes = dict(line.split(":", 1) for line in (form.get("CertAttrib") or [""])[0].splitlines()
                          if ":" in line)
        words = state.words
        if attributes.get("CertificateTemplate") not in state.templates:
            return self.reply(200, self.error_page(words["denied"], 0x80094800), "text/html; charset=utf-8")
        if state.malformed:
            return self.reply(200, self.page(f"<P>{words['issued']}</P>"), "text/html; charset=utf-8")
        try:
            request = x509.load_pem_x509_csr((form.get("CertRequest") or [""])[0].encode())
        except ValueError:
            return self.reply(200, self.error_page(words["denied"], 0x80094001), "text/html; charset=utf-8")
        request_id = next(state.counter)
        entry = {"request": request, "status": "pending", "certificate": None}
        state.requests[request_id] = entry
        if state.mode == "pending":
            text = (f"<P ID=locPendInfo>{words['pending']}</P><P><LocID ID=locReqIdInfo>{words['reqid']}</LocID> "
                    f"{request_id}</P>" if state.language != "ja" else
                    f"<P>{words['pending']}</P><P>{words['reqid']} {request_id}</P>")
            return self.reply(200, self.page(text), "text/html; charset=utf-8")
        if state.mode == "deny":
            entry["status"] = "denied"
            return self.reply(200, self.error_page(words["denied"], 0x80094011), "text/html; charset=utf-8")
        state.issue(request_id)
        script = f"<script>function go(){{location=\"certnew.cer?ReqID={request_id}&\"+\"Enc=b64\";}}</script>"
        return self.reply(200, self.page(f"{script}<P ID=locInfo>{words['issued']}</P>"
                                         f"<A Href=\"certnew.cer?ReqID={request_id}&amp;Enc=b64\">"
                                         f"{words['download']}</A>"), "text/html; charset=utf-8")


class AdcsServer(HttpsCa):
    """An AD CS web-enrolment look-alike. ``mode``: issue | pending | deny; ``defect``: one of
    ``DEFECTS`` for the certificates it issues."""

    handler = _AdcsHandler

    def __init__(self, pki, tmp_dir, *, language="en", templates=("PhoneLSC",), mode="issue", ntlm=False, **kwargs):
        super().__init__(pki, tmp_dir, **kwargs)
        self.language = language
        self.words = PAGES[language]
        self.templates = set(templates)
        self.mode = mode
        self.ntlm = ntlm
        self.malformed = False
        self.key_usage = True
        self.defect = None
        self.requests = {}
        self.forms = []
        self.ntlm_messages = []
        self.ntlm_users = []
        self.counter = itertools.count(41)

    def issue(self, request_id):
        """Issue a request (a CA manager approving a pending one)."""
        entry = self.requests[request_id]
        entry["certificate"] = self.pki.sign_request(entry["request"], key_usage=self.key_usage, defect=self.defect)
        entry["status"] = "issued"

    def deny(self, request_id):
        self.requests[request_id]["status"] = "denied"


def phone_csr(device_name, key, subject_from=None, digest="sha256"):
    """A CSR built by the engine and signed by the phone's key, as in X-CSR/1."""
    from _opencapf import csr  # pylint: disable=import-outside-toplevel
    request = csr.prepare(device_name, key.public_key(), subject_from=subject_from, digest=digest)
    return csr.assemble(request, csr.phone_sign(request.info, key, digest, request.key_type_code))


def accept(outcome, signed, anchors):
    """The engine's acceptance check of what an issuer returned (``Issued``) for a phone's CSR."""
    from _opencapf.issuers import acceptance  # pylint: disable=import-outside-toplevel
    return acceptance.check(outcome.certificate, device_name=signed.device_name, public_key=signed.csr.public_key(),
                            anchors=anchors, intermediates=outcome.intermediates)


def connection(server, pki, hostname="localhost", **overrides):
    """Client settings for a loopback CA: trust the test root, the right credentials."""
    from _opencapf.issuers.transport import Connection  # pylint: disable=import-outside-toplevel
    settings = {"trust_pems": (pem(pki.root),), "username": USERNAME, "password": PASSWORD, "timeout": 10}
    settings.update(overrides)
    return Connection(hostname, server.port, **settings)


__all__ = ["accept", "connection", "phone_csr", "USERNAME", "PASSWORD", "DEFECTS", "OTHER_DEVICE", "AdcsServer", "EstServer",
           "EnterprisePki", "key_pem", "pem"]


def use_online_est(store, pki: "EnterprisePki", est: "EstServer") -> None:
    """Make ``store``'s issuer the online CA ``est`` (an ``EstServer`` of ``pki``), its chain trusted, as an
    operator declares it with ``capf_service``."""
    from _opencapf import service_config, trust  # pylint: disable=import-outside-toplevel

    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "online_ca"},
                            online_ca={"hostname": "localhost", "port": est.port, "type": "est",
                                       "username": USERNAME, "password": PASSWORD})

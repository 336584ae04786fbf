"""A real SMTP relay on loopback for the certificate monitor's tests (aiosmtpd): STARTTLS or implicit TLS
with a certificate of a test CA, AUTH LOGIN/PLAIN with one user, and every message it accepted."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import os
import socket
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from support import pki
from _opencapf.dependencies import ec, hashes, x509

USER = "capf-monitor"
PASSWORD = "Relay-Pa55word-7c1e"
UNANSWERED = "unanswered"  # what ``SmtpRelay.on_message`` returns to take a message and drop the connection unanswered


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _certificate(subject, issuer, key, issuer_key, *, ca):
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(pki.name(subject)).issuer_name(pki.name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(pki.key_usage("digital_signature", "key_cert_sign", "crl_sign"), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def relay_certificate(directory) -> tuple[str, str, str]:
    """A test CA and the relay's certificate for 127.0.0.1 and localhost: (ca file, cert file, key file)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test SMTP Relay CA", "Test SMTP Relay CA", ca_key, ca_key, ca=True)
    leaf = _certificate("localhost", "Test SMTP Relay CA", key, ca_key, ca=False)
    paths = [os.path.join(str(directory), name) for name in ("relay-ca.pem", "relay.pem", "relay.key")]
    for path, data in zip(paths, (pki.pem(ca).encode(), pki.pem(leaf).encode(), pki.key_pem(key))):
        with open(path, "wb") as handle:
            handle.write(data)
    return paths[0], paths[1], paths[2]


class _Handler:
    def __init__(self, relay):
        self.relay = relay

    async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name,unused-argument
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        answer = None
        if self.relay.on_message is not None:  # what happens elsewhere while the client waits for the reply
            answer = self.relay.on_message(message)
            if answer and answer != UNANSWERED:  # the relay's reply refuses the message: it is not taken
                return answer
        with self.relay.lock:
            self.relay.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": message,
                                        "tls": server.transport.get_extra_info("ssl_object") is not None, "login": self.relay.last_login})
        if answer == UNANSWERED:  # taken, but the connection is lost before the client hears so
            server.transport.abort()
        return "250 OK"


class SmtpRelay:
    """``security``: starttls (TLS required before AUTH and mail), tls (implicit) or none (no AUTH)."""

    def __init__(self, directory, security="starttls", *, refuse_login=False):
        self.messages: list[dict] = []
        self.logins: list[tuple[str, bool]] = []  # (user, accepted)
        self.last_login = None
        # Called with each message received, before the relay answers for it; a reply it returns refuses it,
        # UNANSWERED takes it and drops the connection before answering.
        self.on_message = None
        self.lock = threading.Lock()
        self.refuse_login = refuse_login
        self.security = security
        self.ca_file, cert_file, key_file = relay_certificate(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        self.port = free_port()
        options = {}
        if security == "starttls":
            options = {"tls_context": context, "require_starttls": True, "authenticator": self._authenticate,
                       "auth_required": True}
        elif security == "tls":
            options = {"ssl_context": context, "authenticator": self._authenticate, "auth_required": True,
                       "auth_require_tls": False}  # the whole connection is TLS; aiosmtpd asks for STARTTLS otherwise
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
        user = auth_data.login.decode()
        accepted = not self.refuse_login and user == USER and auth_data.password.decode() == PASSWORD
        with self.lock:
            self.logins.append((user, accepted))
            if accepted:
                self.last_login = user
        return AuthResult(success=accepted, handled=False)  # aiosmtpd then answers 235 or 535 itself

    def settings(self) -> dict:
        """The service parameters pointing the monitor at this relay."""
        values = {"monitor_smtp_host": "127.0.0.1", "monitor_smtp_port": self.port,
                  "monitor_smtp_security": self.security, "monitor_sender": "capf@example.com",
                  "monitor_recipients": ["voice-team@example.com", "pki@example.com"]}
        if self.security != "none":
            values.update(monitor_smtp_ca_file=self.ca_file, monitor_smtp_username=USER)
        return values

    def stop(self):
        self.controller.stop()

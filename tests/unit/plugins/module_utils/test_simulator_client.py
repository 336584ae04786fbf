"""The simulator's TLS client on its own: one TLS context per target, and how a session that goes
wrong on the wire ends, on either event loop, against a loopback TLS server that misbehaves."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest

from support import certfactory
from support.protocol import EVENT_LOOPS
from _opencapf.ca import certificates as c
from _opencapf.ca import keys
from _opencapf.server import event_loop
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings


def _subjects(context) -> list:
    return [dict(part[0] for part in entry["subject"])["commonName"] for entry in context.get_ca_certs()]


def test_one_context_per_target_made_again_when_its_trust_anchor_changes(tmp_path):
    first_ca, second_ca = certfactory.make("CAPF-A")[0], certfactory.make("CAPF-B")[0]
    path = tmp_path / "capf.pem"
    path.write_text(c.to_pem(first_ca))
    target = Target(("127.0.0.1",), 3804, cafile=str(path))
    first = target.context()
    assert target.context() is first and _subjects(first) == ["CAPF-A"]
    assert first.verify_mode == ssl.CERT_REQUIRED and not first.check_hostname
    path.write_text(c.to_pem(second_ca))  # the CAPF certificate renewed in the same file
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = target.context()
    assert second is not first and _subjects(second) == ["CAPF-B"]
    target.legacy_tls = True
    assert target.context().minimum_version == ssl.TLSVersion.TLSv1
    other = Target(("127.0.0.1",), 3804, cadata=c.to_pem(first_ca))
    assert other.context() is other.context() and _subjects(other.context()) == ["CAPF-A"]
    assert Target(("127.0.0.1",), 3804).context().verify_mode == ssl.CERT_NONE


class _Misbehaving:
    """A loopback TLS server that completes each handshake, then stays silent or closes at once."""

    def __init__(self, tmp_path, behaviour: str):
        certificate, key = certfactory.make("capf-test", ca=False)
        (tmp_path / "server.pem").write_text(c.to_pem(certificate))
        (tmp_path / "server.key").write_bytes(keys.private_key_pem(key))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
        self.capf_pem = c.to_pem(certificate)
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                raw, _peer = self.listener.accept()
            except OSError:
                return
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            if self.behaviour == "close":
                tls.close()
            else:
                threading.Thread(target=self._hold, args=(tls,), daemon=True).start()

    @staticmethod
    def _hold(tls):
        """Read and never answer, until the phone closes."""
        try:
            while tls.recv(1024):
                pass
        except (OSError, ssl.SSLError):
            pass
        tls.close()

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept in progress
        self.listener.close()
        self.thread.join(10)


@pytest.mark.parametrize("loop", EVENT_LOOPS)
@pytest.mark.parametrize("behaviour, detail", [("silent", "the CAPF server went silent"),
                                               ("close", "the CAPF server closed the connection before END_SESSION")])
def test_a_session_the_server_breaks_is_a_communication_failure(tmp_path, loop, behaviour, detail):
    server = _Misbehaving(tmp_path, behaviour)
    try:
        target = Target(("127.0.0.1",), server.port, cadata=server.capf_pem, timeout=0.5)
        result = event_loop.run(enrol(PhoneIdentity(PhoneSettings("SEP00000000AB01")), target, retries=0), loop)
    finally:
        server.close()
    assert (result.outcome, result.detail, result.attempts) == ("communication_failure", detail, 1)


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_an_untrusted_server_or_none_listening_cannot_be_connected(tmp_path, loop):
    server = _Misbehaving(tmp_path, "silent")
    other_ca = certfactory.make("not-the-capf")[0]
    identity = PhoneIdentity(PhoneSettings("SEP00000000AB02"))
    try:
        untrusted = event_loop.run(enrol(identity, Target(("127.0.0.1",), server.port, cadata=c.to_pem(other_ca),
                                                          timeout=2), retries=0), loop)
    finally:
        server.close()
    closed = event_loop.run(enrol(identity, Target(("127.0.0.1",), server.port, timeout=2), retries=0), loop)
    assert untrusted.outcome == closed.outcome == "communication_failure"
    assert untrusted.detail.startswith(f"cannot connect to 127.0.0.1 port {server.port}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail or "certificate verify failed" in untrusted.detail
    assert closed.detail.startswith(f"cannot connect to 127.0.0.1 port {server.port}: ")

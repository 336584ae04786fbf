"""Every way the CAPF service ends a session, over real TLS: afterwards no phone's operation is left
``in_progress`` (no session is live any more), and every ``failed`` one carries its reason.

Each path is one session of the phone simulator's conversation (``PhoneSession``) in which the
test may replace the phone's answer to one server command: hang up, stay silent, send malformed
bytes, cancel (ABORT_REQUEST), answer wrongly, or stop the service while the session waits.

Every path with an SQLite store; with a PostgreSQL store too, one of each way the store is written:
installed, deleted, fetched, a failure (hang-up at store), the service stopping mid-session and an
offline CA's retry-later (a lockout and a lapsed deadline on PostgreSQL: test_enrolment.py)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from support.phones import phone, run_enrol
from support.protocol import EVENT_LOOPS, RunningServer, add_phone, phone_row
from support.store_phones import change_phone
from support.stores import backend_cases
from _opencapf.dependencies import rsa, serialization
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder, Message, cstring, u8
from _opencapf.protocol.constants import (XCAP_PENDING_KEY, XCAP_SIGN_RSA, XCAPS_ALL, CertificateType, Command, Reason,
                                          Tag)
from _opencapf.protocol.phone import PhoneBehaviour, PhoneSession
from _opencapf.store import service as service_records
from _opencapf.vocabulary import OPERATION_STATUSES

NAME = "SEP00000000E0D5"
STRING = "13572468"


# -- the phone's replacement answers: each gets the server's message and the socket --------------

def hang_up(sock, _message):
    sock.close()
    return False


def stay_silent(_sock, _message):
    return True  # the server's step timeout ends the session


def send(build):
    def answer(sock, message):
        sock.sendall(build(message.session_id))
        return True
    return answer


def stop_service(server):
    def answer(_sock, _message):
        server.stop()  # the session waits for the phone's key: the service's grace period runs out first
        return True
    return answer


GARBAGE = send(lambda _sid: b"\x55\x02\x00\x00\x00\x01\xff\xff")
ABORT = send(lambda sid: codec.encode(Message(Command.ABORT_REQUEST, sid, ((Tag.REASON, u8(Reason.INVALID_ELEMENT)),))))
BAD_VERSION = send(lambda sid: codec.encode(Message(Command.AUTH_RESPONSE, sid, (
    (Tag.VERSION, u8(0)), (Tag.DEVICE_NAME, cstring(NAME))))))
STORE_REFUSED = send(lambda sid: codec.encode(Message(Command.STORE_CERTIFICATE_RESPONSE, sid, (
    (Tag.REASON, u8(Reason.INVALID_ELEMENT)),))))
FETCH_MALFORMED = send(lambda sid: codec.encode(Message(Command.FETCH_CERTIFICATE_RESPONSE, sid, (
    (Tag.REASON, u8(Reason.UPDATE_CERTIFICATE)),
    (Tag.CERTIFICATE, codec.wrap_certificates([(CertificateType.LSC, b"\x30\x03\x02\x01\x01")]))))))
RSA_INSTEAD_OF_EC = send(lambda sid: codec.encode(Message(Command.KEY_GENERATE_RESPONSE, sid, ((
    Tag.PUBLIC_KEY, rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),))))
NOT_A_KEY = send(lambda sid: codec.encode(Message(Command.KEY_GENERATE_RESPONSE, sid, ((Tag.PUBLIC_KEY, b"\x30\x00"),))))

# -- the paths ----------------------------------------------------------------------------------------
# id: (phone settings, or None when the device is not in the store; what the phone has and does;
#      (server command, replacement answer) or None; the phone's operation status afterwards)

INSTALL = dict(operation="install_upgrade", key_order="ec")
DELETE = dict(operation="delete", key_order="ec")
FETCH = dict(operation="troubleshoot", key_order="ec")
OFFLINE = dict(operation="install_upgrade", key_order="rsa", rsa_key_size=1024, issuer="offline_ca")
K, S, F, D, A, E = (Command.KEY_GENERATE_REQUEST, Command.STORE_CERTIFICATE_REQUEST, Command.FETCH_CERTIFICATE_REQUEST,
                    Command.DELETE_CERTIFICATE_REQUEST, Command.AUTH_REQUEST, Command.ENCRYPT_REQUEST)
PATHS = {
    # before the device is known or authenticated
    "unknown-device": (None, {}, None, None),
    "hang-up-before-auth": (INSTALL, {}, (A, hang_up), "pending"),
    "silent-before-auth": (INSTALL, {}, (A, stay_silent), "pending"),
    "malformed-auth": (INSTALL, {}, (A, GARBAGE), "pending"),
    "bad-version": (INSTALL, {}, (A, BAD_VERSION), "pending"),
    "locked-out": (dict(INSTALL, locked=1, auth_failures=5), {}, None, "pending"),
    "lapsed": (dict(INSTALL, operation_deadline="2020-01-01T00:00:00Z"), {}, None, "lapsed"),
    "wrong-string": (dict(INSTALL, auth_mode="auth_string"), {"auth_string": "0000"}, None, "failed"),
    "wrong-string-locks-out": (dict(INSTALL, auth_mode="auth_string", lockout_failures=1), {"auth_string": "0000"},
                               None, "failed"),
    "no-certificate-to-present": (dict(INSTALL, auth_mode="existing_cert_mic"), {}, None, "failed"),
    "no-operation": (dict(operation="none"), {}, None, "none"),
    # install/upgrade
    "version-2-ec": (INSTALL, {"behaviour": PhoneBehaviour(version=2)}, None, "failed"),
    "version-1-ec": (INSTALL, {"behaviour": PhoneBehaviour(version=1)}, None, "failed"),
    "hang-up-at-keygen": (INSTALL, {}, (K, hang_up), "failed"),
    "phone-cancels-at-keygen": (INSTALL, {}, (K, ABORT), "failed"),
    "malformed-at-keygen": (INSTALL, {}, (K, GARBAGE), "failed"),
    "keygen-fails": (INSTALL, {"behaviour": PhoneBehaviour(fail_keygen=3)}, None, "failed"),
    "unsupported-key": (INSTALL, {}, (K, RSA_INSTEAD_OF_EC), "failed"),
    "unreadable-key": (INSTALL, {}, (K, NOT_A_KEY), "failed"),
    "service-stops-at-keygen": (INSTALL, {}, (K, "stop"), "failed"),
    "hang-up-at-store": (INSTALL, {}, (S, hang_up), "failed"),
    "silent-at-store": (INSTALL, {}, (S, stay_silent), "failed"),
    "store-refused": (INSTALL, {}, (S, STORE_REFUSED), "failed"),
    "installed": (INSTALL, {}, None, "succeeded"),
    # delete and troubleshoot
    "deleted": (DELETE, {"lsc": True}, None, "succeeded"),
    "nothing-to-delete": (DELETE, {}, None, "succeeded"),
    "hang-up-at-delete": (DELETE, {"lsc": True}, (D, hang_up), "failed"),
    "silent-at-delete": (DELETE, {"lsc": True}, (D, stay_silent), "failed"),
    "fetched": (FETCH, {"lsc": True}, None, "succeeded"),
    "nothing-to-fetch": (FETCH, {}, None, "failed"),
    "malformed-certificate-fetched": (FETCH, {}, (F, FETCH_MALFORMED), "failed"),
    "hang-up-at-fetch": (FETCH, {}, (F, hang_up), "failed"),
    "silent-at-fetch": (FETCH, {}, (F, stay_silent), "failed"),
    # third-party issuers (X-CSR/1)
    "offline-ca-retry-later": (OFFLINE, {"behaviour": PhoneBehaviour(x_caps=XCAPS_ALL)}, None, "pending"),
    "offline-ca-deferred-without-retry-later": (
        OFFLINE, {"behaviour": PhoneBehaviour(x_caps=XCAP_SIGN_RSA | XCAP_PENDING_KEY)}, None, "pending"),
    "offline-ca-phone-cannot-sign": (OFFLINE, {}, None, "failed"),
    "offline-ca-phone-cannot-keep-a-key": (OFFLINE, {"behaviour": PhoneBehaviour(x_caps=XCAP_SIGN_RSA)}, None,
                                           "failed"),
    "phone-refuses-to-sign": (OFFLINE, {"behaviour": PhoneBehaviour(x_caps=XCAPS_ALL, refuse_sign=True)}, None,
                              "failed"),
    "hang-up-at-sign": (OFFLINE, {"behaviour": PhoneBehaviour(x_caps=XCAPS_ALL)}, (E, hang_up), "failed"),
    "online-ca-not-configured": (dict(OFFLINE, issuer="online_ca"), {"behaviour": PhoneBehaviour(x_caps=XCAPS_ALL)},
                                 None, "failed"),
}


@pytest.fixture
def server(request, ca_store):
    running = RunningServer(ca_store, ["127.0.0.1"], getattr(request, "param", "asyncio"), step_timeout=1.0,
                            handshake_timeout=2.0)
    yield running
    if not running.loop.is_closed():
        running.stop()


def _prepare(store, server, tmp_path, mic_ca, settings, has):
    """The phone in the store (``settings``, None: not at all) and on disk; with an LSC when asked."""
    settings = dict(settings or {})
    parameters = {key: settings.pop(key) for key in ("issuer", "lockout_failures") if key in settings}
    identity = phone(tmp_path, NAME, mic_ca=mic_ca if has.get("mic") else None, auth_mode=settings.get(
        "auth_mode", "null_string"), auth_string=has.get("auth_string", ""))
    if not settings:
        return identity
    add_phone(store, NAME, auth_string=STRING if settings.get("auth_mode") == "auth_string" else None,
              **{**settings, "operation": "install_upgrade" if has.get("lsc") else settings["operation"]})
    if has.get("lsc"):
        assert run_enrol(identity, server).outcome == "ok"
        with store.transaction() as tx:  # the administrator's next operation, as capf_phone sets it
            change_phone(tx, NAME, reissue=True, operation=settings["operation"])
    if parameters:
        with store.transaction() as tx:
            service_records.write(tx, "test", parameters)
    return identity


def _session(server, identity, behaviour, cut) -> None:
    """One session over TLS: the simulator answers, except to ``cut``'s command."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    handset = PhoneSession(identity, behaviour)
    decoder = Decoder()
    with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=15)) as sock:
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                return
            if not data:
                return
            for message in decoder.feed(data):
                if message.command in (Command.END_SESSION, Command.RETRY_LATER):
                    return
                if cut is not None and message.command == cut[0]:
                    answer = stop_service(server) if cut[1] == "stop" else cut[1]
                    if not answer(sock, message):
                        return
                    cut = None
                    continue
                reply = handset.receive_data(codec.encode(message))
                if reply:
                    sock.sendall(reply)


def _sessions(store) -> int:
    with store.read() as tx:
        return tx.scalar("SELECT count(*) FROM sessions")


def _unsettled(store) -> list:
    with store.read() as tx:
        rows = tx.query("SELECT name, operation_status, operation_reason FROM phones")
    return [row for row in rows if row["operation_status"] == "in_progress"
            or (row["operation_status"] == "failed" and not row["operation_reason"])]


ON_POSTGRESQL = ["installed", "deleted", "fetched", "hang-up-at-store", "service-stops-at-keygen", "offline-ca-retry-later"]


@pytest.mark.parametrize("backend, path", backend_cases(sorted(PATHS), ON_POSTGRESQL), indirect=["backend"])
def test_no_operation_is_left_in_progress_when_a_session_ends(server, ca_store, mic_ca, tmp_path, path):
    _ends_settled(server, ca_store, mic_ca, tmp_path, path)


# One path of each kind of ending (completed, the phone hangs up, goes silent, sends garbage, the service
# stops) on the other event loop: the driver over it ends and records every session the same way.
ON_EVERY_LOOP = ["installed", "hang-up-before-auth", "silent-at-store", "malformed-at-keygen", "service-stops-at-keygen",
                 "fetched"]


@pytest.mark.parametrize("server", [loop for loop in EVENT_LOOPS if loop != "asyncio"], indirect=True)
@pytest.mark.parametrize("path", ON_EVERY_LOOP)
def test_sessions_end_settled_on_every_event_loop(server, ca_store, mic_ca, tmp_path, path):
    _ends_settled(server, ca_store, mic_ca, tmp_path, path)


def _ends_settled(server, ca_store, mic_ca, tmp_path, path):
    settings, has, cut, expected = PATHS[path]
    identity = _prepare(ca_store, server, tmp_path, mic_ca, settings, has)
    before = _sessions(ca_store)
    _session(server, identity, has.get("behaviour") or PhoneBehaviour(), cut)
    deadline = time.monotonic() + 15
    while _sessions(ca_store) == before and time.monotonic() < deadline:  # the server records after the phone left
        time.sleep(0.02)
    assert _sessions(ca_store) == before + 1, "the session is not on record"
    assert _unsettled(ca_store) == []
    if expected is not None:
        row = phone_row(ca_store, NAME)
        assert expected in OPERATION_STATUSES
        assert row["operation_status"] == expected, dict(row)

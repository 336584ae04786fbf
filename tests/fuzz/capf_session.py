"""The fuzz target's world: a store with one phone per seed scenario, and one input run through the
protocol codec and the server's session state machine.

An input is one byte of chunk size (0: everything at once) followed by the bytes a phone sends
after the server's AUTH_REQUEST. The committed seeds are recorded real sessions (record_seeds.py),
one per operation and authentication mode, so mutations start from every deep state of the
protocol. The certificates they present chain to the public anchors in ``anchors/`` (the recording
store's CAPF certificate and manufacturing CA), which the fuzz store trusts; no private key of
theirs is kept.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE_PATH = os.path.join(os.path.dirname(os.path.dirname(HERE)), "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)

# pylint: disable=wrong-import-position
from _opencapf.ca import authority  # noqa: E402
from _opencapf.ca import certificates as c  # noqa: E402
from _opencapf.ca.lsc import CAPF_ISSUER  # noqa: E402
from _opencapf.errors import CapfError  # noqa: E402
from _opencapf.phone_config import COLUMN_OPTIONS, AuthRequest, PhoneRequest, check_settings, converge_many  # noqa: E402
from _opencapf.protocol import codec  # noqa: E402
from _opencapf.protocol.codec import Decoder, ProtocolError  # noqa: E402
from _opencapf.protocol.constants import SERVER_TAGS, Command, Reason, Tag  # noqa: E402
from _opencapf.protocol.session import ServerSession  # noqa: E402
from _opencapf.server.decider import StoreDecider  # noqa: E402
from _opencapf.store import open_store  # noqa: E402
from _opencapf.store import certificates as certificate_records  # noqa: E402
from _opencapf.store import phones as phone_records  # noqa: E402
from _opencapf.vocabulary import format_utc, utc_now  # noqa: E402

SESSION_ID = 0x0CAF0001
SEEDS = os.path.join(HERE, "corpus")
ANCHORS = os.path.join(HERE, "anchors")
AUTH_STRING = "1234"
END_REASONS = {Reason.NO_ACTION, Reason.UPDATE_CERTIFICATE, Reason.INVALID_ELEMENT, Reason.UNKNOWN_DEVICE}

# seed name -> (device name, phone settings in the store, what the recorded session ended with)
SCENARIOS = {
    "install-null-string-ec": ("SEP00000000F001", dict(operation="install_upgrade", key_order="ec"), "succeeded"),
    "install-null-string-rsa": ("SEP00000000F002", dict(operation="install_upgrade", key_order="rsa",
                                                        rsa_key_size=1024), "succeeded"),
    "install-ec-preferred-retry": ("SEP00000000F003", dict(operation="install_upgrade", key_order="ec_preferred"),
                                   "succeeded"),
    "install-auth-string": ("SEP00000000F004", dict(operation="install_upgrade", key_order="ec",
                                                    auth_mode="auth_string"), "succeeded"),
    "install-existing-mic": ("SEP00000000F005", dict(operation="install_upgrade", key_order="ec",
                                                     auth_mode="existing_cert_mic"), "succeeded"),
    "install-existing-lsc": ("SEP00000000F006", dict(operation="install_upgrade", key_order="ec",
                                                     auth_mode="existing_cert_lsc"), "succeeded"),
    "delete-existing-lsc": ("SEP00000000F007", dict(operation="delete", auth_mode="existing_cert_lsc"), "succeeded"),
    "troubleshoot-existing-mic": ("SEP00000000F008", dict(operation="troubleshoot", auth_mode="existing_cert_mic"),
                                  "succeeded"),
    "no-operation": ("SEP00000000F009", dict(operation="none"), "no_operation"),
    "jabber-version-2": ("CSFFUZZJABBER", dict(operation="install_upgrade", key_order="rsa", rsa_key_size=1024),
                         "succeeded"),
    "unknown-device": ("SEP00000000FFFF", None, "unknown_device"),
}


def build_store(directory: str):
    """A fresh store for the fuzz target: its own CAPF certificate plus the recorded anchors, and the phones."""
    store = open_store(os.path.join(directory, "capf.db"), actor="fuzz")
    authority.ensure(store)
    with store.transaction() as tx:
        with open(os.path.join(ANCHORS, "capf.pem"), encoding="ascii") as handle:
            capf_pem = handle.read()
        capf = c.load_pem_certificate(capf_pem)
        now = format_utc(utc_now())
        tx.insert("INSERT INTO capf_certificates (common_name, serial, fingerprint, key_type, key_path, pem, "
                  "not_before, not_after, source, active, created_at, retired_at) "
                  "VALUES (?, ?, ?, 'rsa2048', '', ?, ?, ?, 'uploaded', 0, ?, ?)",
                  (c.common_name(capf.subject), format(capf.serial_number, "x"), c.fingerprint(capf), capf_pem,
                   format_utc(c.not_before(capf)), format_utc(c.not_after(capf)), now, now))
        with open(os.path.join(ANCHORS, "mic-ca.pem"), encoding="ascii") as handle:
            mic_ca_pem = handle.read()
        mic_ca = c.load_pem_certificate(mic_ca_pem)
        tx.insert("INSERT INTO trust_certificates (trust_store, fingerprint, subject, common_name, issuer, is_ca, "
                  "not_after, description, pem, created_at) VALUES ('capf-trust', ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                  (c.fingerprint(mic_ca), mic_ca.subject.rfc4514_string(), c.common_name(mic_ca.subject),
                   mic_ca.issuer.rfc4514_string(), format_utc(c.not_after(mic_ca)), "fuzz manufacturing CA",
                   mic_ca_pem, now))
    add_phones(store)
    return store


def add_phones(store) -> None:
    """Each scenario's phone, put into the store along the one converge path of phone settings."""
    secret = store.secret()
    with store.transaction() as tx:
        for seed, (name, settings, _outcome) in SCENARIOS.items():
            if settings is None:
                continue
            auth = AuthRequest(literal=AUTH_STRING if settings.get("auth_mode") == "auth_string" else None)
            wanted = check_settings({COLUMN_OPTIONS[column]: value for column, value in settings.items()})
            converge_many(tx, "fuzz", secret, [(None, PhoneRequest(name, wanted, auth))], via="capf_phone")
            if settings.get("auth_mode") == "existing_cert_lsc":
                _record_presented_lsc(tx, phone_records.get(tx, name), seed)


def _record_presented_lsc(tx, phone: dict, seed: str) -> None:
    """The LSC a recorded session presents is on record in the fuzz store, as it was in the
    recording store (an LSC of ours that is not on record no longer authenticates)."""
    with open(os.path.join(SEEDS, seed), "rb") as handle:
        messages = Decoder().feed(handle.read()[1:])
    value = next(message.get(Tag.CERTIFICATE) for message in messages if message.has(Tag.CERTIFICATE))
    ((_kind, der),) = codec.unwrap_certificates(value)
    certificate = c.load_der_certificate(der)
    certificate_records.insert(
        tx, phone_id=phone["id"], kind="lsc", serial=format(certificate.serial_number, "x"),
        issuer=CAPF_ISSUER, fingerprint=c.fingerprint(certificate),
        public_key_fingerprint=c.public_key_fingerprint(certificate.public_key()), status="installed",
        source="capf", pem=c.to_pem(certificate), not_before=format_utc(c.not_before(certificate)),
        not_after=format_utc(c.not_after(certificate)))


def reset(store) -> None:
    """Every phone back to its scenario's pending operation (a run may complete or fail it)."""
    with store.transaction() as tx:  # the sessions' state reset at once (failures, lock, result): no engine path does
        for name, settings, _outcome in SCENARIOS.values():
            if settings is None:
                continue
            operation = settings["operation"]
            tx.execute("UPDATE phones SET operation = ?, operation_status = ?, auth_failures = 0, locked = 0, "
                       "operation_deadline = NULL WHERE name = ?",
                       (operation, "pending" if operation != "none" else "none", name))


def check_codec(stream: bytes) -> None:
    """Whatever the decoder accepts encodes back to the same bytes and decodes to the same message."""
    decoder = Decoder()
    try:
        messages = decoder.feed(stream)
    except ProtocolError:
        return
    for message in messages:
        again = codec.decode(codec.encode(message))
        assert again == message, (message, again)


def _check_output(server: ServerSession, output: bytes) -> None:
    messages = Decoder().feed(output) if output else []
    for message in messages:
        assert message.session_id == SESSION_ID
        assert {tag for tag, _value in message.elements} <= SERVER_TAGS, message
        assert len(codec.encode(message)) <= 4096
    if server.closed and messages:
        assert messages[-1].command == Command.END_SESSION
        assert messages[-1].u8(Tag.REASON) in END_REASONS


def run_one(store, data: bytes) -> ServerSession:
    """One fuzz input through the codec and a fresh ServerSession with the real store decider.

    Anything escaping other than an AssertionError of ours is a defect (the session must turn any
    input into one of the protocol's own outcomes, and settle the operation it started)."""
    if not data:
        return None
    chunk = data[0] or len(data)
    stream = data[1:]
    check_codec(stream)
    server = ServerSession(SESSION_ID, StoreDecider(store, "fuzz"), step_timeout=10.0)
    _check_output(server, server.start(0.0))
    now = 0.0
    for offset in range(0, len(stream), chunk):
        now += 1.0
        _check_output(server, server.receive_data(stream[offset:offset + chunk], now))
        if server.closed:
            break
    if not server.closed:
        _check_output(server, server.time_passed(now + 3600.0 * 2))
    server.connection_lost()
    assert server.closed and server.outcome.outcome, server.outcome
    check_settled(store)
    return server


def check_settled(store) -> None:
    """Once a session has ended no operation is in progress (no session is live), and every failed
    one says why."""
    with store.read() as tx:
        for row in tx.query("SELECT name, operation_status, operation_reason FROM phones"):
            assert row["operation_status"] != "in_progress", row
            assert row["operation_status"] != "failed" or row["operation_reason"], row


def seed_files() -> list[str]:
    return sorted(os.path.join(SEEDS, name) for name in os.listdir(SEEDS))


__all__ = ["CapfError", "SCENARIOS", "SESSION_ID", "build_store", "check_settled", "reset", "run_one", "seed_files"]

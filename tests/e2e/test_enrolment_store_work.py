"""The store work of one CAPF session, counted on the service's own SQLite connection over real TLS.

Invariant: a session reads the store once when the phone names itself (its row, and whatever its
authentication needs), and writes as few transactions as the durability rule allows. Nothing is sent
before what it depends on is on disk, and an issued LSC must be on record before the phone receives
it, so an enrolment has exactly two durable points: the issuance (with the session start and the
key request) before STORE_CERTIFICATE_REQUEST, and the installation with the operation's result and
the session record before END_SESSION. Every other session has one: its end. An authentication
string is checked in a write transaction of its own (the brute-force bound: failures are counted
serialised), so that mode costs one write more; so does a fetch, whose copies are kept in a step of
their own (a copy the store refuses fails that step, not the session's end).

The counts come from SQLite's statement trace on the service's connection (``BEGIN`` a read,
``BEGIN IMMEDIATE`` a write, a write's ``COMMIT`` under ``synchronous = FULL`` a durable one), for
every kind of session: an install by each authentication mode, a delete, a fetch, a check-in with no
operation, failed authentications, a locked and a lapsed phone, an unknown device. SQLite only: the
decider's store work is the same code on PostgreSQL, which has no statement trace to count it by."""

from __future__ import annotations

import pytest

from support.phones import phone, run_enrol
from support.protocol import RunningServer, add_phone
from support.store_phones import change_phone
from _opencapf.ca import authority
from _opencapf.simulator.manufacturing import ManufacturingCa
from _opencapf.store import open_store
from _opencapf.store import service as service_records

STRING = "4711"


class Counter:
    """Transactions and statements of one SQLite connection, from its statement trace."""

    def __init__(self, backend):
        self._connection = backend._connection  # pylint: disable=protected-access
        self._full = True  # a store opened without group commit starts with synchronous = FULL
        self.reads = self.writes = self.durable = self.statements = self.whole_rows = 0
        self._write = False

    def __enter__(self):
        self._connection.set_trace_callback(self._trace)
        return self

    def __exit__(self, *exc):
        self._connection.set_trace_callback(None)

    def _trace(self, sql: str) -> None:
        text = sql.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS"):
            self._full = text.endswith("FULL")
        elif text == "BEGIN IMMEDIATE":
            self.writes += 1
            self._write = True
        elif text == "BEGIN":
            self.reads += 1
            self._write = False
        elif text == "COMMIT":
            self.durable += self._write and self._full
        elif text != "ROLLBACK" and not text.startswith("PRAGMA DATA_VERSION"):
            self.statements += 1
            self.whole_rows += text.startswith("SELECT * FROM PHONES ")

    def figures(self) -> tuple:
        return self.reads, self.writes, self.durable


INSTALL = dict(operation="install_upgrade", key_order="ec")
# kind: (phone settings (None: not in the store), what the phone has, outcome, (reads, writes, durable), statements at most)
# An install counts the check that its signer is still the active CAPF certificate apart from the LSC's
# insert (store/certificates.insert_new_serial: cheaper than one INSERT ... SELECT).
SESSIONS = {
    "install-null-string": (INSTALL, {}, "ok", (1, 2, 2), 15),
    "install-auth-string": (dict(INSTALL, auth_mode="auth_string"), {"auth_string": STRING}, "ok", (1, 3, 2), 16),
    "install-existing-lsc": (dict(INSTALL, auth_mode="existing_cert_lsc"), {"lsc": True}, "ok", (1, 2, 2), 19),
    "install-existing-mic": (dict(INSTALL, auth_mode="existing_cert_mic"), {"mic": True}, "ok", (1, 2, 2), 18),
    "delete": (dict(operation="delete"), {"lsc": True}, "ok", (1, 1, 1), 10),
    "fetch": (dict(operation="troubleshoot"), {"lsc": True}, "no_operation", (1, 2, 1), 13),
    "no-operation": (dict(operation="none"), {}, "no_operation", (1, 1, 1), 5),
    # A wrong string fails the pending operation: its phone.auth_failed and phone.operation_failed events
    # are two rows of one batched insert, which the trace counts as two.
    "wrong-string": (dict(INSTALL, auth_mode="auth_string"), {"auth_string": "0000"}, "failed", (1, 2, 1), 7),
    "no-certificate": (dict(INSTALL, auth_mode="existing_cert_mic"), {}, "failed", (1, 1, 1), 6),
    "locked": (dict(INSTALL, locked=1, auth_failures=5), {}, "failed", (1, 1, 1), 3),
    # lapsed: one statement more than a refusal, for its CSRs still at a CA (failed with the operation)
    "lapsed": (dict(INSTALL, operation_deadline="2020-01-01T00:00:00Z"), {}, "failed", (1, 1, 1), 7),
    "unknown-device": (None, {}, "unknown_device", (1, 1, 1), 3),
}
# Reads of the phone's whole row: the session's first read (its plan), and a step that needs more
# than the session's columns (``phones.SESSION_COLUMNS``): the string check (salt, hash, failures),
# the fetch's copies. Every other read of the current row (the issuance, the end) takes those only.
WHOLE_ROW_READS = {"install-auth-string": 2, "wrong-string": 2, "fetch": 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One store and one running service for every kind of session (each on its own phone)."""
    directory = tmp_path_factory.mktemp("store-work")
    store = open_store(str(directory / "capf.db"), actor="test")
    authority.ensure(store)
    mic_ca = ManufacturingCa.create(str(directory / "mic-ca"))
    assert mic_ca.trust_in(store)
    server = RunningServer(store, ["127.0.0.1"], step_timeout=5.0, handshake_timeout=5.0)
    phones = {}
    for index, (kind, (settings, has, _outcome, _bound, _statements)) in enumerate(sorted(SESSIONS.items())):
        name = f"SEP0000000051{index:02X}"
        identity = phone(directory, name, mic_ca=mic_ca if has.get("mic") else None,
                         auth_mode=(settings or {}).get("auth_mode", "null_string"),
                         auth_string=has.get("auth_string", ""))
        if settings is not None:
            add_phone(store, name, auth_string=STRING if settings.get("auth_mode") == "auth_string" else None,
                      **(dict(INSTALL) if has.get("lsc") else settings))
        if has.get("lsc"):
            assert run_enrol(identity, server).outcome == "ok"
            with store.transaction() as tx:  # the administrator's next operation, as capf_phone sets it
                change_phone(tx, name, reissue=True, operation=settings.get("operation", "install_upgrade"),
                             auth_mode=settings.get("auth_mode", "null_string"))
        phones[kind] = identity
    with store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 5})
    yield server, phones
    server.stop()
    store.close()


@pytest.mark.parametrize("kind", sorted(SESSIONS))
def test_a_session_reads_once_and_writes_only_at_its_durable_points(world, kind):
    """Reads, writes and durable commits of each kind of session, and its reads of the phone's whole row."""
    server, phones = world
    _settings, _has, outcome, bound, statements = SESSIONS[kind]
    # The service reads the parameters again after another connection committed: not the session's work.
    server.server._connection_state()  # pylint: disable=protected-access
    with Counter(server.store.backend) as counter:
        result = run_enrol(phones[kind], server)
    assert result.outcome == outcome, result
    print(f"{kind}: reads, writes, durable commits {counter.figures()}, statements {counter.statements}")
    assert counter.figures() == bound
    assert counter.statements <= statements
    # Each column of a row read costs the service CPU (a phone has over twenty): the issuance and the
    # session's end read the phone's current row again, but only the columns they use.
    assert counter.whole_rows == WHOLE_ROW_READS.get(kind, 1)

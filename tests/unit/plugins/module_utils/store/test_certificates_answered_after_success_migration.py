"""Migration 23: "a CA never lies about a certificate". An engine before migration 21 left a phone's key
request pending at a third-party CA once the phone's operation had succeeded elsewhere, and recorded the
certificate the CA signed for it later as an ``issued`` LSC with the phone's highest recency: the phone's
current LSC, for a key the phone no longer holds, and the pending key's certificate a later session would
deliver. Once migrated, each such LSC is ``stale`` (recency 0) with its ``certificate.stale`` audit event,
its request ``superseded`` with its ``csr.superseded`` one, both by ``schema-migration``; the phone's current
LSC is the one it acknowledged. Every other certificate and request is as it was: an LSC in flight or
waiting for the phone's next session (its operation not finished), one recorded before the phone's last
success (it may be on the phone), a CAPF-issued one, a revoked one. A second opening changes nothing.

The property runs over phone histories made of the steps the engines record (the CAPF's or a CA's LSC
installed, a CA's answer recorded, the CAPF's LSC sent and never acknowledged, a troubleshoot or a delete
succeeding, the operator arming, revoking, clearing the operation), written into a store at schema version 22 as the engine wrote them; which LSCs lie
is known from the order of the steps. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from support import certfactory
from _opencapf import enrolment
from _opencapf.store import audit_actions, migrate, open_store, postgresql
from _opencapf.store.certificates import CURRENT_LSC
from _opencapf.store.migrations import ANSWERED_AFTER_SUCCESS, LATEST_VERSION, MIGRATION_ACTOR
from _opencapf.store.postgresql import PostgresBackend
from _opencapf.store.sqlite import SqliteBackend

# A DN's text may hold backslashes (RFC 4514 escapes) and quotes: the migration's events must stay JSON.
ISSUERS = {"capf": "CN=CAPF-0023", "online_ca": 'CN=Online \\"CA\\" 23,O=Acme\\, Inc.', "offline_ca": "CN=Offline CA 23"}
THIRD_PARTY = ("online_ca", "offline_ca")
STEPS = ("capf_install", "ca_install", "ca_answer", "ca_answer", "ca_answer", "capf_sent", "troubleshoot", "delete",
         "arm", "start", "revoke", "clear")
HISTORIES = st.lists(st.lists(st.tuples(st.sampled_from(STEPS), st.sampled_from(THIRD_PARTY)), min_size=2, max_size=8),
                     min_size=2, max_size=5)
# The defect itself: the CAPF installed the phone's LSC while the online CA held its earlier request, which
# the CA signed afterwards; a troubleshoot succeeded, then the offline CA's late answer; and a delete.
DEFECT = [[("capf_install", "online_ca"), ("ca_answer", "online_ca")],
          [("arm", "online_ca"), ("ca_answer", "online_ca"), ("troubleshoot", "online_ca"),
           ("ca_answer", "offline_ca")],
          [("capf_install", "online_ca"), ("delete", "online_ca"), ("ca_answer", "offline_ca")]]
_runs = itertools.count(1)
PEM = certfactory.pem(certfactory.make("SEP000000000023", ca=False)[0])  # what a session would deliver, as it reads it


def _backend(location: str):
    return PostgresBackend(location) if postgresql.is_location(location) else SqliteBackend(location)


class _Phone:
    """One phone's history written as the engine at schema version 22 wrote it, and what it tells: the LSCs
    a CA's answer recorded after the phone's last success (``lies``) while its operation stood succeeded."""

    def __init__(self, tx, name: str, clock, serials):
        self.tx, self.name, self.clock, self.serials = tx, name, clock, serials
        self.id = tx.insert("INSERT INTO phones (name, created_at, updated_at) VALUES (?, ?, ?)",
                            (name, next(clock), next(clock)))
        self.operation, self.status = "none", "none"
        self.answered_after_success: set[int] = set()  # the CA's answers recorded since the last success
        self.recorded_since_success: set[int] = set()  # every LSC recorded since then (answers, the CAPF's sent)
        self.acknowledged: int | None = None  # the LSC the phone acknowledged last
        self.last_install_success = False

    def _next_recency(self) -> int:
        return self.tx.scalar("SELECT COALESCE(MAX(recency), 0) + 1 FROM certificates WHERE phone_id = ? "
                              "AND kind = 'lsc'", (self.id,))

    def _lsc(self, source: str, status: str = "issued") -> int:
        serial, at = format(next(self.serials), "x"), next(self.clock)
        return self.tx.insert(
            "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, "
            "source, pem, not_before, not_after, issued_at, status_changed_at, recency) VALUES (?, 'lsc', ?, ?, ?, ?, "
            "?, ?, ?, '2026-01-01T00:00:00Z', '2031-01-01T00:00:00Z', ?, ?, ?)",
            (self.id, serial, ISSUERS[source], f"f{serial}", f"k{serial}", status, source, PEM, at, at,
             self._next_recency()))

    def _request(self, certificate_id: int) -> None:
        at = next(self.clock)
        self.tx.insert("INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, csr_pem, status, "
                       "certificate_id, created_at, updated_at) VALUES (?, ?, ?, 'not a request', 'issued', ?, ?, ?)",
                       (self.id, f"k{certificate_id}", b"key", certificate_id, at, at))

    def _succeeded(self, operation: str) -> None:
        self.operation, self.status = operation, "succeeded"
        self.answered_after_success, self.recorded_since_success = set(), set()
        self.last_install_success = operation == "install_upgrade"
        self.tx.execute("INSERT INTO audit_events (at, actor, action, subject, details) VALUES (?, 'capf-server', "
                        "'phone.operation_succeeded', ?, '{}')", (next(self.clock), self.name))

    def _revoke(self, certificate_id: int) -> None:
        at = next(self.clock)
        self.tx.execute("UPDATE certificates SET status = 'revoked', status_changed_at = ?, revoked_at = ?, "
                        "revocation_reason = 'superseded' WHERE id = ?", (at, at, certificate_id))

    def _install(self, source: str) -> None:
        """``certificates.install`` of a new LSC: the one installed before revoked, older ones issued stale."""
        certificate_id = self._lsc(source)
        if source != "capf":
            self._request(certificate_id)
        for row in self.tx.query("SELECT id, status FROM certificates WHERE phone_id = ? AND kind = 'lsc' "
                                 "AND status IN ('installed', 'issued') AND id != ?", (self.id, certificate_id)):
            if row["status"] == "installed":
                self._revoke(row["id"])
            elif row["id"] < certificate_id:
                self.tx.execute("UPDATE certificates SET status = 'stale', recency = 0 WHERE id = ?", (row["id"],))
        at = next(self.clock)
        self.tx.execute("UPDATE certificates SET status = 'installed', installed_at = ?, status_changed_at = ?, "
                        "recency = ? WHERE id = ?", (at, at, self._next_recency(), certificate_id))
        self.acknowledged = certificate_id
        self._succeeded("install_upgrade")

    def step(self, step: str, source: str) -> None:
        if step in ("capf_install", "ca_install"):
            self._install("capf" if step == "capf_install" else source)
        elif step == "ca_answer":  # the CA's answer to a request of the phone, recorded for delivery
            certificate_id = self._lsc(source)
            self._request(certificate_id)
            self.answered_after_success.add(certificate_id)
            self.recorded_since_success.add(certificate_id)
        elif step == "capf_sent":  # signed by the CAPF in a session (one that overlapped a success, too), sent
            self.recorded_since_success.add(self._lsc("capf"))  # and never acknowledged: it may be on the phone
        elif step == "troubleshoot":
            self._succeeded("troubleshoot")
        elif step == "delete":  # the delete revokes the LSCs installed and issued (sent, never acknowledged)
            for row in self.tx.query("SELECT id FROM certificates WHERE phone_id = ? AND kind = 'lsc' "
                                     "AND status IN ('installed', 'issued')", (self.id,)):
                self._revoke(row["id"])
            self._succeeded("delete")
        elif step == "revoke":  # the operator revokes the phone's newest LSC installed or issued
            row = self.tx.one("SELECT id FROM certificates WHERE phone_id = ? AND kind = 'lsc' "
                              "AND status IN ('installed', 'issued') ORDER BY id DESC LIMIT 1", (self.id,))
            if row is not None:
                self._revoke(row["id"])
        else:
            self.operation, self.status = {"arm": ("install_upgrade", "pending"), "start": ("install_upgrade", "in_progress"),
                                           "clear": ("none", "none")}[step]
            if step == "arm":  # a new operation: what the phone acknowledged before is no success of it
                self.last_install_success = False
        self.tx.execute("UPDATE phones SET operation = ?, operation_status = ? WHERE id = ?",
                        (self.operation, self.status, self.id))

    def lies(self) -> set[int]:
        """The LSCs still ``issued`` that a CA's answer recorded after the phone's last success, its operation
        succeeded: never on the phone, and no session delivers them."""
        if self.status != "succeeded":
            return set()
        issued = {row["id"] for row in self.tx.query("SELECT id FROM certificates WHERE phone_id = ? "
                                                     "AND status = 'issued'", (self.id,))}
        return issued & self.answered_after_success


def _snapshot(store) -> dict:
    with store.read() as tx:
        return {"certificates": {row["id"]: row for row in tx.query("SELECT * FROM certificates ORDER BY id")},
                "csrs": {row["id"]: row for row in tx.query("SELECT * FROM csrs ORDER BY id")},
                "events": tx.query("SELECT * FROM audit_events ORDER BY id"),
                "current": {row["name"]: row["id"] for row in tx.query(
                    f"SELECT p.name, l.id FROM phones p LEFT JOIN certificates l ON l.phone_id = p.id AND {CURRENT_LSC}")},
                "applied": tx.scalar("SELECT applied_at FROM schema_migrations WHERE version = 23")}


@pytest.mark.both_backends
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(histories=HISTORIES)
@example(histories=DEFECT)
def test_migration_23_makes_stale_the_lscs_a_ca_signed_after_the_phones_success(
        more_store_locations, state_dir, histories, monkeypatch):
    location = more_store_locations(f"answered-{next(_runs)}")
    backend = _backend(location)
    migrate(backend, target=22)
    clock = (f"2026-05-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z" for second in itertools.count())
    serials = itertools.count(0x2300)
    with backend.transaction() as tx:
        phones = [_Phone(tx, f"SEP00000000{index:02d}23", clock, serials) for index in range(len(histories))]
        for phone, history in zip(phones, histories):
            for step, source in history:
                phone.step(step, source)
        lies = {certificate_id: phone for phone in phones for certificate_id in phone.lies()}
        # The LSC the phone acknowledged at its last success, unless one recorded since stays (the CAPF's, sent;
        # or a CA's answer the operator revoked: a revocation is final).
        acknowledged = {phone.name: phone.acknowledged for phone in phones
                        if phone.status == "succeeded" and phone.last_install_success
                        and phone.recorded_since_success <= phone.lies()}
        before = {table: {row["id"]: row for row in tx.query(f"SELECT * FROM {table}")} for table in ("certificates", "csrs")}
    backend.close()
    with open_store(location, state_dir=state_dir, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION >= 23
        after = _snapshot(store)
        with store.read() as tx:
            for certificate_id, phone in lies.items():
                row = tx.one("SELECT * FROM phones WHERE id = ?", (phone.id,))
                # The phone's next session, once the operator armed the operation again, delivers no such LSC
                # as its pending key's (``decider.StoreDecider.third_party_state``).
                state = enrolment.next_for_phone(tx, row)
                assert getattr(state, "certificate_id", None) != certificate_id, (phone.name, state)
    repaired = {certificate_id for certificate_id, row in after["certificates"].items()
                if row["status"] == "stale" and row["status_changed_at"] == after["applied"]}
    assert repaired == set(lies)
    assert all(after["certificates"][certificate_id]["recency"] == 0 for certificate_id in lies)
    # Every other certificate and request as it was: in flight, waiting, recorded before the last success, ...
    assert {key: row for key, row in after["certificates"].items() if key not in lies} == {
        key: row for key, row in before["certificates"].items() if key not in lies}
    assert {key: row for key, row in after["csrs"].items() if row["certificate_id"] not in lies} == {
        key: row for key, row in before["csrs"].items() if row["certificate_id"] not in lies}
    assert not set(after["current"].values()) & set(lies)
    assert {name: after["current"][name] for name in acknowledged} == acknowledged
    requests = {row["id"]: row for row in after["csrs"].values() if row["certificate_id"] in lies}
    assert all((row["status"], row["reason"]) == ("superseded", ANSWERED_AFTER_SUCCESS) for row in requests.values())
    events = [event for event in after["events"] if event["actor"] == MIGRATION_ACTOR]
    monkeypatch.setattr(audit_actions, "STRICT", True)
    for event in events:
        audit_actions.check(event["action"], json.loads(event["details"]))  # the vocabulary's shape
        # as the engine writes details: JSON with its keys sorted (store.audit)
        assert event["details"] == json.dumps(json.loads(event["details"]), sort_keys=True)
        assert event["at"] == after["applied"]
    stale = [(event["subject"], json.loads(event["details"])) for event in events if event["action"] == "certificate.stale"]
    assert stale == [(lies[certificate_id].name, {
        "certificate_id": certificate_id, "reason": ANSWERED_AFTER_SUCCESS,
        "issuer": after["certificates"][certificate_id]["issuer"],
        "serial": after["certificates"][certificate_id]["serial"], "source": after["certificates"][certificate_id]["source"],
        "not_after": after["certificates"][certificate_id]["not_after"]}) for certificate_id in sorted(lies)]
    superseded = [(event["subject"], json.loads(event["details"])) for event in events
                  if event["action"] == "csr.superseded"]
    assert superseded == [(lies[row["certificate_id"]].name, {"csr_id": csr_id, "reason": ANSWERED_AFTER_SUCCESS})
                          for csr_id, row in sorted(requests.items())]
    with open_store(location, state_dir=state_dir, actor="test") as store:
        again = _snapshot(store)
    assert again == after

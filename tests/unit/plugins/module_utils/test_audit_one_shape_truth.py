"""One audit shape: whatever records a change of a phone's operation or of one of its key requests (a
live session, its end, the scheduler's round, the operator's change, the offline CA's import), the audit
log says it in one shape, so that reading the log alone, in order, tells each phone's operation status
and reason and each key request's failure as the store holds them.

Invariant, checked after every step of the fleet's life (``test_phone_lifecycle_truth.FleetLife``: the
operator's declarations, revocations and removals, sessions of every sort, cut or whose process dies,
time passing, the offline CA's imports, the scheduler's round), on SQLite and PostgreSQL, with the CAPF
or an offline CA as issuer:

* every stored change of a phone's operation status or reason is an event of the phone, the newest
  of the step: ``phone.operation_<status>`` with the ``operation`` and the ``reason`` (whoever records
  a result, a settling, a lapse), or the operator's ``phone.create``/``phone.update`` with the
  ``operation_status`` and ``operation_reason`` it wrote. Only a session's start, which puts the
  operation ``in_progress``, is told by the session's own events at its end;
* every key request that became ``failed`` is one ``csr.failed`` event of its phone with its
  ``csr_id`` and the ``reason`` stored, whoever failed it (the session's end, the scheduler settling an
  abandoned session or a lapse, a session's start settling an abandoned one, the operator's change);
* every key request that became ``superseded`` is one ``csr.superseded`` event of its phone with its
  ``csr_id`` and the ``reason`` stored, whatever superseded it (the phone's newer request, a session that
  joins or completes another one's operation, the phone's refusal of a delivered certificate);
* every LSC that became ``revoked`` is one ``certificate.revoked`` event of its phone with its
  ``certificate_id``, ``serial``, ``issuer``, ``reason`` and ``revoked_at`` as stored, whoever revoked it
  (the operator, the phone's removal, a session's delete operation, a newer LSC the phone stored, the
  scheduler's revocation of expired LSCs), and every ``certificate.revoked`` event tells those;
* every LSC that became ``stale`` (or was recorded stale) is one ``certificate.stale`` event of its phone
  with its ``certificate_id``, ``serial`` and ``issuer`` as stored, and a ``reason``, whatever made it
  stale (a newer key the phone stored, the phone's newer request, the phone not storing it or no longer
  holding its key, its refusal at delivery, its arrival from a CA after its request no longer waited).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import invariant, run_state_machine_as_test

import test_abandoned_requests_truth as abandoned  # pylint: disable=import-error
from _opencapf import phone_config, service_config, trust
from _opencapf.dependencies import ec
from _opencapf.protocol.session import AuthOffer, Outcome
from _opencapf.server.decider import StoreDecider, settle_abandoned
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc
from support.third_party_ca import EnterprisePki, pem
from test_abandoned_requests_truth import pki  # noqa: F401  pylint: disable=import-error,unused-import
from test_phone_lifecycle_truth import FleetLife, fleet_clock  # noqa: F401  pylint: disable=import-error,unused-import

pytestmark = pytest.mark.both_backends

OPERATION_EVENT = "phone.operation_"
SETTINGS_EVENTS = ("phone.create", "phone.update")
NEW_PHONE = ("none", "")  # a phone's operation status and reason before its phone.create
REVOKED_KEYS = ("serial", "issuer", "reason", "revoked_at")  # what the log tells of every LSC revoked
STALE_KEYS = ("serial", "issuer")  # what the log tells of every LSC stale as the store holds it (and a reason)


def _told(told, event) -> tuple | None:
    """A phone's operation status and reason as the log tells them, after ``event`` (None: removed)."""
    action, details = event["action"], event["details"]
    if action == "phone.delete":
        return None
    if action.startswith(OPERATION_EVENT):
        assert set(details) >= {"operation", "reason"}, ("an operation's event without its operation and reason", event)
        return action[len(OPERATION_EVENT):], details["reason"]
    if action in SETTINGS_EVENTS:
        status, reason = NEW_PHONE if action == "phone.create" or told is None else told
        return details.get("operation_status", status), details.get("operation_reason", reason)
    return told


class AuditedFleetLife(FleetLife):
    """The fleet's life, its audit log read after every step as an operator would read it."""

    def __init__(self):
        super().__init__()
        self.told: dict[str, tuple | None] = {}
        self.marker = 0
        self._read_log()
        _phones, self.requests, self.lscs = self._stored()

    def _stored(self):
        with self.store.read() as tx:
            phones = {name: None if row is None else (row["operation_status"], row["operation_reason"])
                      for name in self.names for row in [phone_records.get(tx, name)]}
            requests = {row["id"]: (row["name"], row["status"], row["reason"]) for row in tx.query(
                "SELECT r.id, p.name, r.status, r.reason FROM csrs r JOIN phones p ON p.id = r.phone_id "
                "WHERE p.name IN (?, ?)", tuple(self.names))}
            lscs = {row.pop("id"): row for row in tx.query(
                "SELECT c.id, p.name, c.status, c.serial, c.issuer, c.revocation_reason AS reason, c.revoked_at "
                "FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE c.kind = 'lsc' AND p.name IN (?, ?)",
                tuple(self.names))}
        return phones, requests, lscs

    def _read_log(self) -> list:
        """The events of the fleet's phones since the last read, oldest first."""
        with self.store.read() as tx:
            rows = tx.query("SELECT id, action, subject, details FROM audit_events WHERE id > ? AND subject IN (?, ?) "
                            "ORDER BY id", (self.marker, *self.names))
            self.marker = tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")
        events = [dict(row, details=json.loads(row["details"])) for row in rows]
        for event in events:
            self.told[event["subject"]] = _told(self.told.get(event["subject"]), event)
        return events

    @invariant()
    def the_audit_log_tells_every_change_in_one_shape(self):
        before, lscs_before = self.requests, self.lscs
        events = self._read_log()
        phones, requests, lscs = self._stored()
        for name, stored in phones.items():
            if stored is not None and stored[0] == "in_progress":
                continue  # a session's start: its events come with its end
            assert self.told.get(name) == stored, (
                f"{name}: the store holds the operation {stored}, its audit log tells {self.told.get(name)}",
                [(event["action"], event["details"]) for event in events if event["subject"] == name])
        for csr_id, (name, status, reason) in requests.items():
            if status not in ("failed", "superseded") or before.get(csr_id, (name, "", ""))[1] == status:
                continue
            told = [event["details"] for event in events if event["action"] == f"csr.{status}"
                    and event["subject"] == name and event["details"].get("csr_id") == csr_id]
            assert [item["reason"] for item in told] == [reason], (
                f"{name}: key request {csr_id} {status} ({reason!r}) and the log tells {told}",
                [(event["action"], event["details"]) for event in events if event["subject"] == name])
        revocations = [event for event in events if event["action"] == "certificate.revoked"]
        for event in revocations:  # those of a removed phone's LSCs too
            assert set(event["details"]) >= set(REVOKED_KEYS), ("an LSC's revocation without its " + ", ".join(
                key for key in REVOKED_KEYS if key not in event["details"]), event)
        for lsc_id, lsc in lscs.items():
            if lsc["status"] != "revoked" or lscs_before.get(lsc_id, {}).get("status") == "revoked":
                continue
            told = [{key: event["details"].get(key) for key in REVOKED_KEYS} for event in revocations
                    if event["subject"] == lsc["name"] and event["details"]["certificate_id"] == lsc_id]
            assert told == [{key: lsc[key] for key in REVOKED_KEYS}], (
                f"{lsc['name']}: LSC {lsc_id} was revoked {lsc}, the log tells {told}")
        stale = [event for event in events if event["action"] == "certificate.stale"]
        for lsc_id, lsc in lscs.items():
            if lsc["status"] != "stale" or lscs_before.get(lsc_id, {}).get("status") == "stale":
                continue
            told = [{key: event["details"].get(key) for key in STALE_KEYS} for event in stale
                    if event["subject"] == lsc["name"] and event["details"]["certificate_id"] == lsc_id
                    and event["details"].get("reason")]
            assert told == [{key: lsc[key] for key in STALE_KEYS}], (
                f"{lsc['name']}: LSC {lsc_id} became stale {lsc}, the log tells {told}",
                [(event["action"], event["details"]) for event in stale if event["subject"] == lsc["name"]])
        self.requests, self.lscs = requests, lscs


@pytest.mark.parametrize("issuer", ["capf", "offline_ca"])
def test_the_audit_log_tells_a_fleet_s_life_in_one_shape(ca_store, fleet_clock, issuer):  # noqa: F811
    service_config.converge(ca_store, parameters_wanted={"validity_days": 1, "renew_before_days": 1,
                                                         "renew_max_per_day": 100000, "issuer": issuer})
    AuditedFleetLife.pki = None
    if issuer == "offline_ca":
        AuditedFleetLife.pki = EnterprisePki()
        trust.converge(ca_store, content=pem(AuditedFleetLife.pki.root) + pem(AuditedFleetLife.pki.issuing),
                       trust_store=["capf-trust"])
    AuditedFleetLife.store = ca_store
    AuditedFleetLife.clock = fleet_clock
    run_state_machine_as_test(AuditedFleetLife, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


# -- the requests of a session that ended without a result --------------------------------------------------

SETTLERS = ("scheduler", "new session", "operator", "session's end")
IGNORED_KEYS = ("csr_id", "session_id", "via")  # ids, and the path that asked
TWINS = {settler: f"SEP00000000E{index:03X}" for index, settler in enumerate(SETTLERS)}


def _settled(store, settler: str, name: str, deadline, earlier: bool, now) -> None:
    """The phone ``name``'s request, sent by a session that ended without a result, failed by ``settler``:
    the scheduler's round, a new session of the phone (its start settles the abandoned one first), the
    operator's change of the phone (it records what the views report first), or that session's own end
    (its connection lost before it could tell the phone to come back)."""
    if settler == "session's end":
        phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                     "ec_key_size": 256,
                                                     **({} if deadline is None else {"operation_completes_by": deadline})})
        if earlier:
            abandoned._earlier_request(store, name, ec.generate_private_key(ec.SECP256R1()))
        decider, plan = abandoned._send_request_and_die(store, name)
        decider.ended(plan, Outcome(name, plan.operation, "aborted", "the phone's connection was lost"))
        return
    abandoned._twin_phone(store, name, "abandoned", deadline, earlier, now)
    if settler == "scheduler":
        settle_abandoned(store)
    elif settler == "new session":
        decider = StoreDecider(store, max_session=abandoned.MAX_SESSION)
        plan = decider.begin(name)
        assert decider.authenticate(plan, AuthOffer(name.encode(), None)).ok
    else:
        phone_config.converge(store, name, settings={"description": "lobby"})


def _request_events(store, name: str, after: int) -> list:
    with store.read() as tx:
        rows = tx.query("SELECT action, details FROM audit_events WHERE subject = ? AND id > ? AND action LIKE 'csr.%' "
                        "ORDER BY id", (name, after))
    return [(row["action"], {key: value for key, value in json.loads(row["details"]).items() if key not in IGNORED_KEYS})
            for row in rows]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(deadline=st.sampled_from((None, "tomorrow")), earlier=st.booleans())
def test_a_request_failed_with_its_session_is_one_csr_failed_event_whoever_fails_it(ca_store, pki, deadline, earlier):
    """Whoever fails the request of a session that ended without a result (``SETTLERS``), the log says it
    with one ``csr.failed`` event of the phone, its ``csr_id`` and ``reason`` (the reason an abandoned
    session is settled with, or the session's own), as the stored request has it; the request of an
    earlier session that the CA still holds stays pending, with no event."""
    store = ca_store
    abandoned._offline(store, pki)
    abandoned._clear(store)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    at = None if deadline is None else format_utc(now + dt.timedelta(days=1))
    with store.read() as tx:
        after = tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")
    shapes, reasons = {}, {}
    for settler, name in TWINS.items():
        _settled(store, settler, name, at if settler == "session's end" else deadline, earlier, now)
        with store.read() as tx:
            failed = [row["reason"] for row in tx.query(
                "SELECT r.reason FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ? AND r.status = 'failed'",
                (name,))]
        events = _request_events(store, name, after)
        reasons[settler] = [details["reason"] for action, details in events if action == "csr.failed"]
        assert len(failed) == 1 and reasons[settler] == failed, f"{settler}: the request failed {failed}, the log tells {events}"
        shapes[settler] = [(action, sorted(details)) for action, details in events if action != "csr.created"]
    for settler in SETTLERS:
        assert shapes[settler] == shapes["scheduler"], (
            f"{settler} tells the failed request as {shapes[settler]}, the scheduler as {shapes['scheduler']}")
        if settler != "session's end":  # the session's end fails it with its own words
            assert reasons[settler] == reasons["scheduler"], (settler, reasons)

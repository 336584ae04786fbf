"""An operator changes a phone while one of its sessions is under way: whatever the change and whenever
it comes, what the store records and reports of the phone is what happened to it.

The change goes through the engine's one converge path (``phone_config.converge``, over the
``converge_many`` of bulk jobs, CSV imports and the declarative file): another certificate operation,
other key settings, an operation deadline already passed, a revocation of the phone's LSCs, the phone's removal (and its return under
the same name); or another session's wrong authentication strings lock the phone. It comes between any
two exchanges of the session (or after its end), and the phone then completes, loses power, or answers
that it did not store its LSC. The invariants, on both backends:

* no operation is left ``in_progress``;
* an LSC the operator revoked stays revoked, and the CRL goes on listing it, even when the phone then
  stores it: a CA never takes a revocation back;
* the one LSC ``installed`` is the one the phone holds, unless the operator revoked that one;
* the phone's current LSC is the one it holds, or one issued to it after its last installation;
  revoked when the operator revoked it;
* an operation result recorded is what happened to the phone: an operation the operator declared
  during the session is still to be done when the session ends (the session ran another one), an
  install is ``succeeded`` when the phone stored its LSC, revoked meanwhile or not (as after a
  revocation just after the installation: a revoked phone, perhaps a stolen one, is never given a
  new LSC unasked), and a phone removed during the session (or removed and added again) gets
  nothing of it recorded;
* the audit log names what happened: a ``phone.operation_succeeded`` event names an operation the
  phone carried out, and no event of the service names a phone after its removal.

The session is the service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` and the
simulator's ``PhoneSession``, driven an exchange at a time."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone, phone_row
from support.sessions import BEHAVIOURS, SessionLeg
from _opencapf import phone_config, reports
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import certificates as certificate_records
from _opencapf.store import phones as phone_records

pytestmark = pytest.mark.both_backends

# The operator's change: converge settings, a revocation, the phone's removal, or a lock.
CHANGES = {
    "operation delete": {"settings": {"certificate_operation": "delete"}},
    "operation none": {"settings": {"certificate_operation": "none"}},
    "operation troubleshoot": {"settings": {"certificate_operation": "troubleshoot"}},
    "operation install_upgrade": {"settings": {"certificate_operation": "install_upgrade"}},
    "key order rsa": {"settings": {"key_order": "rsa"}},
    "ec key size 384": {"settings": {"ec_key_size": 384}},
    "deadline passed": {"settings": {"operation_completes_by": "2000-01-01T00:00:00Z"}},
    "revoke": {"revoke": {"reason": "key_compromise"}},
    "remove": {"state": "absent"},
    "remove and add again": {"state": "absent"},
    "locked by wrong strings": {},
}
_names = itertools.count(1)


# The operation a session ran, by what the server asked of the phone.
RAN = {"install": "install_upgrade", "delete": "delete", "fetch": "troubleshoot", "": "none"}


def _session(store, identity, session_id: int, behaviour: str, events: list, change=None, at: int = 0) -> str:
    """One session, stepped to its end; ``change()`` runs after ``at`` exchanges (or after the end).
    Returns the operation the session ran."""
    leg = SessionLeg(store, identity, session_id, behaviour)
    now, steps = 0.0, 0
    while not leg.done:
        if change is not None and steps == at:
            change()
            change = None
        now += 0.01
        steps += 1
        event = leg.step(now)
        if event is not None:
            events.append((event, leg.issued))
    if change is not None:
        change()
    return RAN[leg.phone.result.operation]


def _lock(store, name: str) -> None:
    """Another session of the phone offers wrong authentication strings until the phone locks."""
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        phone_records.record_auth_failure(tx, "capf-server", phone, 1, "wrong authentication string",
                                          operation=phone["operation"])


def _run(store, operation: str, behaviour: str, change_name: str, at: int):
    """A phone holding an LSC (installed by a first session) runs a session of ``operation``; the
    operator's change comes after ``at`` of its exchanges. Returns what the checks need."""
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    # No phone is added after it: on SQLite the phone added again gets the same id (the highest rowid
    # is given again), on PostgreSQL another one; the session tells both from its own.
    events: list[tuple[str, str | None]] = []
    _session(store, identity, 1, "completes", events)
    phone_config.converge(store, name, settings={"certificate_operation": operation}, reissue=True)
    first = phone_row(store, name)
    first_id = (first["id"], first["incarnation"])
    with store.read() as tx:
        audit_mark = tx.scalar("SELECT MAX(id) FROM audit_events")
    record = {"revoked": set(), "events_before": None, "removed_at": None, "ran": None,
              "before_read": at <= 1}  # the session reads the phone when the phone names itself, in its second exchange

    def change():
        record["events_before"] = len(events)
        spec = CHANGES[change_name]
        if change_name == "locked by wrong strings":
            _lock(store, name)
            return
        result = phone_config.converge(store, name, **spec)
        if change_name == "revoke":
            record["revoked"] = set(result["revoked"])
        if spec.get("state") == "absent":
            with store.read() as tx:
                record["removed_at"] = tx.scalar("SELECT MAX(id) FROM audit_events")
            if change_name == "remove and add again":
                phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade",
                                                             "key_order": "ec"})

    record["ran"] = _session(store, identity, 2, behaviour, events, change, at)
    return name, identity, events, record, first_id, audit_mark


def _check(store, name, identity, operation, change_name, events, record, first_id, audit_mark) -> None:
    held = None if identity.lsc is None else format(identity.lsc.serial_number, "x")
    phone = phone_row(store, name)
    with store.read() as tx:
        lscs = [] if phone is None else tx.query(
            "SELECT id, serial, status FROM certificates WHERE phone_id = ? AND kind = 'lsc'", (phone["id"],))
        listed = reports.phone_rows(tx, {"names": [name]})
        crl = {row["serial"] for row in certificate_records.revoked_lscs(tx)}
        audit_events = tx.query("SELECT id, actor, action, subject, details FROM audit_events WHERE id > ? "
                                "AND subject = ? ORDER BY id", (audit_mark, name))
    status = {row["serial"]: row["status"] for row in lscs}
    before = events[:record["events_before"]]
    session = events[2:]  # the first two are the first session's issuance and installation
    context = (events, record, lscs,
               phone and (phone["operation"], phone["operation_status"], phone["operation_reason"]))

    # An LSC the operator revoked stays revoked, and the CRL lists it.
    for serial in record["revoked"]:
        assert status.get(serial, "revoked") == "revoked", context
        assert serial in crl, context

    removed = CHANGES[change_name].get("state") == "absent"
    if removed and record["before_read"]:
        # The session is one of the phone added again, or of no phone in the store.
        assert phone is None or phone["operation_status"] != "in_progress", context
        return
    if removed:
        # Nothing of the session is recorded for the phone after its removal (nor for its new row).
        late = [event for event in audit_events if event["id"] > record["removed_at"]
                and event["actor"] == "capf-server"]
        assert late == [], (late, context)
        if change_name == "remove":
            assert phone is None and listed == []
        else:
            assert (phone["id"], phone["incarnation"]) != first_id
            assert (phone["operation"], phone["operation_status"]) == ("install_upgrade", "pending"), context
            assert lscs == [], context
        return

    assert phone["operation_status"] != "in_progress", context

    # The one LSC installed is the one the phone holds (unless the operator revoked that one).
    installed = [serial for serial, state in status.items() if state == "installed"]
    assert installed == ([held] if held is not None and held not in record["revoked"] else []), context

    # The phone's current LSC: the one it holds, or one issued after its last installation.
    not_stored = {serial for event, serial in events if event == "not stored"}
    lsc_events = [(event, serial) for event, serial in events if event in ("issued", "installed")
                  and serial not in not_stored]
    if "deleted" not in [event for event, _serial in events]:
        event, serial = lsc_events[-1]
        expected = "revoked" if serial in record["revoked"] else event
        assert (listed[0]["lsc"]["serial"], listed[0]["lsc"]["status"]) == (serial, expected), context
        if event == "installed":
            assert serial == held

    # An operation result recorded is what happened to the phone.
    ran, declared = record["ran"], phone["operation"]
    did = [event for event, _serial in session if event in ("installed", "deleted", "fetched")]
    if change_name == "locked by wrong strings":
        pass  # the other session's failure is on record too, before or after this session's result
    elif record["before_read"] and change_name == "deadline passed":
        assert phone["operation_status"] == "lapsed", context
    elif declared != ran:
        # The operator declared another operation during the session: it is still to be done.
        assert phone["operation_status"] == ("none" if declared == "none" else "pending"), context
    elif did:
        assert phone["operation_status"] == "succeeded", context
    elif ran != "none":
        # Failed; or pending still, when the change came before the session wrote anything: a session
        # settles only an operation that nobody touched since it read the phone (``_untouched``).
        assert phone["operation_status"] in ("failed", "pending"), context

    # The audit log: an operation reported succeeded is one the phone carried out in the session.
    for event in audit_events:
        if event["action"] == "phone.operation_succeeded":
            assert did and json.loads(event["details"])["operation"] == ran, (dict(event), context)


OPERATIONS = ("install_upgrade", "delete")


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPERATIONS), st.sampled_from(sorted(BEHAVIOURS)), st.sampled_from(sorted(CHANGES)),
       st.integers(min_value=0, max_value=8))
@example("install_upgrade", "completes", "revoke", 3)
@example("install_upgrade", "completes", "operation delete", 3)
@example("install_upgrade", "completes", "operation delete", 2)
@example("delete", "completes", "operation install_upgrade", 2)
@example("install_upgrade", "completes", "remove and add again", 3)
@example("install_upgrade", "completes", "remove and add again", 2)
def test_an_operator_s_change_during_a_session_leaves_the_store_telling_what_happened(
        ca_store, operation, behaviour, change_name, at):
    name, identity, events, record, first_id, audit_mark = _run(ca_store, operation, behaviour, change_name, at)
    _check(ca_store, name, identity, operation, change_name, events, record, first_id, audit_mark)

"""Overlapping sessions of one device: whatever order their steps run in, what the store reports of the
phone's LSC is what the phone holds.

A phone that reconnects while its old session still waits on the server (a dropped connection the
server has not noticed yet) has two sessions at once; each may get an LSC of its own, and the phone
may acknowledge them in either order. The invariant, over every interleaving of two or three sessions
(each completing, losing power before its key or before storing its LSC, or answering that it did not
store it), on both backends:

* at most one LSC of the phone is ``installed``, and it is the one the phone holds;
* the phone's current LSC (the listings, the CAPF report, ``capf_info``) is the one it holds, installed,
  unless an LSC was issued to it after that installation: then that one, ``issued`` (it went out,
  and no installation was acknowledged yet); never a revoked or stale one, nor one the phone said it
  did not store;
* the renewal scheduler takes the held LSC for the phone's current one: due when it is;
* no operation is left ``in_progress``, and one that a session completed stays ``succeeded``
  whatever another session's phone answers later.

The sessions are the service's own sans-I/O ``ServerSession`` with its ``StoreDecider``, and the
simulator's ``PhoneSession`` around one ``PhoneIdentity`` (the one phone), driven an exchange at a
time; over TLS: ``tests/e2e/test_reconnecting_phone.py``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone, phone_row
from support.sessions import BEHAVIOURS, SessionLeg, in_turn
from _opencapf import reports
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import renewals

pytestmark = pytest.mark.both_backends

_names = itertools.count(1)


def _run(store, behaviours: list[str], schedule: list[int]):
    """The sessions, each stepped in the order ``schedule`` names them (then in turn until all end).
    Returns the phone, and the serials issued and installed in the order the store recorded them."""
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    legs = [SessionLeg(store, identity, 100 + index, behaviour) for index, behaviour in enumerate(behaviours)]
    events: list[tuple[str, str]] = []
    now = 0.0
    for leg in in_turn(legs, schedule):
        now += 0.01
        event = leg.step(now)
        if event is not None:
            events.append((event, leg.issued))
    return name, identity, events


def _expected_current(events) -> tuple[str, str] | None:
    """(serial, status) the phone's current LSC must show: the LSC installed last, unless another was
    issued after that installation (then the last one issued, as ``issued``); an LSC the phone said it
    did not store is never current."""
    not_stored = {serial for event, serial in events if event == "not stored"}
    events = [(event, serial) for event, serial in events if serial not in not_stored]
    if not events:
        return None
    event, serial = events[-1]
    return serial, event


def _check(store, name: str, identity: PhoneIdentity, events) -> None:
    held = None if identity.lsc is None else format(identity.lsc.serial_number, "x")
    phone = phone_row(store, name)
    with store.read() as tx:
        lscs = tx.query("SELECT id, serial, status FROM certificates WHERE phone_id = ? AND kind = 'lsc'", (phone["id"],))
        (listed,) = reports.phone_rows(tx, {"names": [name]})
        due = [row for row in renewals.due(tx, "9999-01-01T00:00:00Z", 1000) if row["name"] == name]
        settled = tx.query("SELECT action, details FROM audit_events WHERE subject = ? AND details LIKE ?",
                           (name, "%stopped mid-session%"))
    assert phone["operation_status"] != "in_progress"
    # Every session here is live until its own end: none is ever taken for one no process serves.
    assert settled == [], (settled, events)
    if any(event == "installed" for event, _serial in events):  # a later failure of another session does not undo it
        assert (phone["operation_status"], phone["operation_reason"]) == ("succeeded", ""), events
    installed = [row["serial"] for row in lscs if row["status"] == "installed"]
    assert installed == ([held] if held is not None else []), (lscs, held, events)
    expected = _expected_current(events)
    current = listed["lsc"] and (listed["lsc"]["serial"], listed["lsc"]["status"])
    assert current == expected, (lscs, events)
    if current is not None and current[1] == "installed":
        assert current[0] == held
    # the renewal scheduler's current LSC: due (the horizon is far) exactly when it is installed
    serials = {row["id"]: row["serial"] for row in lscs}
    assert [serials[row["lsc_id"]] for row in due] == ([held] if expected and expected[1] == "installed" else [])


@pytest.mark.parametrize("order", ["issued order", "reverse order"])
def test_two_sessions_acknowledged_in_either_order_leave_the_phone_s_lsc_current(ca_store, order):
    """Both sessions get their LSC out before either phone answers; the second one issued is answered
    first in the reverse order, so the phone ends up holding the older LSC."""
    first, second = (0, 1) if order == "issued order" else (1, 0)
    # Each session runs to its STORE_CERTIFICATE_REQUEST (start, AUTH, KEY_GENERATE), then the answers.
    name, identity, events = _run(ca_store, ["completes", "completes"], [0, 0, 0, 1, 1, 1, first, second])
    assert [event for event, _serial in events] == ["issued", "issued", "installed", "installed"]
    assert events[-1][1] == events[1 - first][1] == format(identity.lsc.serial_number, "x")
    _check(ca_store, name, identity, events)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(BEHAVIOURS)), min_size=2, max_size=3),
       st.lists(st.integers(min_value=0, max_value=2), max_size=24))
@example(["completes", "completes"], [0, 0, 0, 1, 1, 1, 1, 0])
@example(["completes", "loses power before storing", "completes"], [0, 0, 0, 1, 1, 1, 0, 2, 2, 2, 1])
@example(["completes", "answers that it did not store"], [0, 0, 0, 0, 1, 1, 1, 1])
def test_whatever_the_interleaving_the_store_reports_the_lsc_the_phone_holds(ca_store, behaviours, schedule):
    name, identity, events = _run(ca_store, behaviours, schedule)
    _check(ca_store, name, identity, events)

"""A key request no session can deliver any more is never reported waiting, once another session of the
phone completed the operation.

A phone reconnects while its earlier session may still be live: the later session joins it. The earlier
one sends its request to the online CA after that join (so the join did not supersede it) and the CA holds
it; the later session delivers an LSC and records the operation ``succeeded``; then the earlier session
ends deferred, or its process dies and it never ends. The operation is no longer pending, so no session of
the phone runs it again (nothing delivers what the CA signs for that request), and it is not ``in_progress``,
so the scheduler never settles it as abandoned. Two sessions of one phone with the online CA, each
completing, ending after its request without storing, or dying after its start or after its request, the CA
holding or signing each one's request, their steps and the enrolment service's polls interleaved in every
order hypothesis chooses, on SQLite and on PostgreSQL. Invariant:

* once the operation's result is recorded, or every session has ended or died and every bound has passed
  (by more than the store's clock skew), no key request of the phone is reported ``pending`` unless a
  session may still act on it: the phone's newest, made or adopted by a session that ended deferred,
  with its operation waiting for the phone's next session;
* every view reports the same status of each request: the CSR listing, the requests waiting for a
  signature (``capf_info`` ``pending_csrs``), and what the scheduler's round records.

The sessions are the service's ``StoreDecider``, driven a step at a time as ``ServerSession`` drives it
(a session that dies stops between two steps and records nothing more); the focused test drives the
service's ``ServerSession`` and the simulator's ``PhoneSession``.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from support.install_sessions import FATES, InstallLeg, holds, recorded_requests, reported_requests
from support.protocol import add_phone, phone_row
from support.sessions import SessionLeg
from support.third_party_ca import EnterprisePki, use_online_est
from _opencapf import enrolment, scheduler
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.server.decider import settle_abandoned
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, format_utc

pytestmark = pytest.mark.both_backends

MAX_SESSION = 60
SECOND = dt.timedelta(seconds=1)
POLLS = "the enrolment service polls"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


def _may_wait(legs, recorded: dict, operation_status: str) -> set:
    """The requests that may still be reported pending: the phone's newest, made or adopted by a session
    that ended deferred, while its operation waits for the phone's next session."""
    if operation_status != "pending" or not recorded:
        return set()
    newest = max(recorded)
    return {newest} & set().union(*(leg.requests for leg in legs if leg.ended_as == "deferred"))


def _check_now(store, name: str, legs) -> None:
    moment = format_utc(dt.datetime.now(dt.timezone.utc))
    reported = reported_requests(store, name, moment)
    status = phone_records.reported_operation(phone_row(store, name), moment, store.clock_skew)[0]
    if status == "succeeded":
        assert "pending" not in reported.values(), ([(leg.fate, leg.ended_as, leg.requests) for leg in legs], reported)


def _check_after_every_bound(store, name: str, legs) -> None:
    bound = phone_row(store, name)["operation_live_until"]
    latest = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=MAX_SESSION + LIVENESS_MARGIN_SECONDS)
    if bound is not None:
        latest = max(latest, dt.datetime.fromisoformat(bound.replace("Z", "+00:00")))
    moment = latest + store.clock_skew + SECOND
    reported = reported_requests(store, name, format_utc(moment))
    settle_abandoned(store, moment)
    scheduler.lapse_deadlines(store, moment)
    recorded = recorded_requests(store, name)
    assert reported == recorded, (reported, recorded)
    assert reported_requests(store, name, format_utc(moment)) == recorded
    waiting = {csr_id for csr_id, status in recorded.items() if status == "pending"}
    allowed = _may_wait(legs, recorded, phone_row(store, name)["operation_status"])
    assert waiting <= allowed, ([(leg.fate, leg.ended_as, leg.requests) for leg in legs], recorded,
                                phone_row(store, name)["operation_status"])


def _run(store, est, fates, held, schedule):
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    legs = [InstallLeg(store, est, name, fate, holding, MAX_SESSION) for fate, holding in zip(fates, held)]
    for position, item in enumerate(itertools.chain(schedule, itertools.cycle(range(len(legs))))):
        if position >= len(schedule) and all(leg.done for leg in legs):
            break
        if item == POLLS:
            enrolment.worker_step(store)
            continue
        leg = legs[item % len(legs)]
        if not leg.done:
            leg.step()
    return name, legs


def test_a_request_held_for_a_session_that_ended_before_another_completed_is_not_left_pending(ca_store, pki, est):
    """The service's sessions and the simulator's phone: the second session's request is signed at once;
    the first session's, sent after it, is held by the CA and the first session ends deferred; then the
    second session's phone stores its LSC. No session will deliver the held request's certificate."""
    use_online_est(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    holds(est, False)
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL) for session_id in (1, 2))
    for step in range(3):  # each to its ENCRYPT_REQUEST (started, joined, key generated)
        first.step(0.1 * step)
    for step in range(3):
        second.step(0.1 * step)
    assert second.step(1.0) == "issued"
    holds(est, True)
    first.step(1.1)
    assert first.done and first.server.outcome.outcome == "deferred"
    assert second.step(1.2) == "installed"
    assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    reported = reported_requests(ca_store, name, format_utc(dt.datetime.now(dt.timezone.utc)))
    assert "pending" not in reported.values(), reported
    with ca_store.read() as tx:
        events = tx.query("SELECT details FROM audit_events WHERE subject = ? AND action = 'csr.superseded'", (name,))
    assert events and csr_records.COMPLETED in events[-1]["details"], events
    _check_after_every_bound(ca_store, name, [])


# The orders of the two sessions' steps (four at most each), each as likely, and where the enrolment
# service polls the CA among them.
ORDERS = [[0 if index in first else 1 for index in range(8)] for first in itertools.combinations(range(8), 4)]


@st.composite
def _orders(draw) -> list:
    order = list(draw(st.sampled_from(ORDERS)))
    for position in sorted(draw(st.sets(st.integers(min_value=0, max_value=8), max_size=2)), reverse=True):
        order.insert(position, POLLS)
    return order


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(list(itertools.product(FATES, repeat=2))),
       st.sampled_from(list(itertools.product((True, False), repeat=2))), _orders())
# The first session starts, the second joins it; the second's request is signed, the first's, sent after
# it, held; the first session's process dies; the second's phone stores its LSC.
@example(("dies after its request", "completes"), (True, False), [0, 1, 0, 1, 1, 0, 0, 1])
# The same, the first session ending deferred.
@example(("completes", "completes"), (True, False), [0, 1, 0, 1, 1, 0, 0, 1])
def test_no_request_waits_for_good_once_the_operation_completed_or_every_session_is_gone(
        ca_store, pki, est, fates, held, schedule):
    use_online_est(ca_store, pki, est)
    name, legs = _run(ca_store, est, fates, held, schedule)
    _check_now(ca_store, name, legs)
    _check_after_every_bound(ca_store, name, legs)

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

from support.protocol import add_phone, phone_row
from support.sessions import DeciderLeg, SessionLeg
from support.third_party_ca import EnterprisePki, use_online_est
from _opencapf import csr as csr_module
from _opencapf import enrolment, reports, scheduler
from _opencapf.dependencies import ec, serialization
from _opencapf.errors import CapfError
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.protocol.session import AuthOffer, Deferred, Issued, KeyChoice
from _opencapf.server.decider import settle_abandoned
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, format_utc

pytestmark = pytest.mark.both_backends

MAX_SESSION = 60
SECOND = dt.timedelta(seconds=1)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
POLLS = "the enrolment service polls"
FATES = ("completes", "ends without storing", "dies after its start", "dies after its request")
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


def _holds(est, held: bool) -> None:
    """The CA holds the requests it gets from now on (until further notice), or signs them at once."""
    est.pending_first = 10 ** 6 if held else 0


class _Leg(DeciderLeg):
    """One session of the phone, a step at a time: its start (authentication), the pending key's state,
    the request (which the CA holds when ``held``), the phone's answer and the end."""

    def __init__(self, store, est, name: str, fate: str, held: bool):
        self.est, self.held = est, held
        super().__init__(store, name, fate, MAX_SESSION)

    @property
    def requests(self) -> set:
        """The requests it sent or waits on."""
        return {csr_id for csr_id in (self.decider._csr_id, self.decider._adopted)  # pylint: disable=protected-access
                if csr_id is not None}

    def _answer(self, issued: Issued):
        """The phone's STORE_CERTIFICATE_RESPONSE for a delivered LSC, and the session's end."""
        if self.fate == "completes":
            self.decider.stored(self.plan, issued, True)
            self._end("succeeded", "LSC installed")
        else:
            self.decider.stored(self.plan, issued, False)
            self._end("failed", "phone did not store the certificate")

    def _steps(self):
        self.plan = self.decider.begin(self.name)
        assert not self.plan.refusal, self.plan
        if self.plan.operation == "none":  # another session completed it: a check-in
            self._end("succeeded", "nothing to do")
            return
        assert self.decider.authenticate(self.plan, AuthOffer(self.name.encode(), None)).ok
        yield
        if self.fate == "dies after its start":
            self.done = True
            return
        try:
            state = self.decider.third_party_state(self.plan)
        except CapfError as exc:
            self._end("failed", str(exc))
            return
        yield
        if isinstance(state, Issued):
            self._answer(state)
            return
        if isinstance(state, Deferred):  # the CA holds the request of the key the phone kept
            self._end("deferred", state.reason)
            return
        key = ec.generate_private_key(ec.SECP256R1())
        request = self.decider.prepare_csr(self.plan, key.public_key().public_bytes(*_SPKI), KeyChoice("ec", 256))
        signature = csr_module.phone_sign(request.info, key, "sha256", request.key_type_code)
        _holds(self.est, self.held)
        try:
            result = self.decider.submit_csr(self.plan, request, signature)
        except CapfError as exc:  # not sent, or refused by the CA
            self._end("failed", str(exc))
            return
        yield
        if self.fate == "dies after its request":
            self.done = True
        elif isinstance(result, Issued):
            self._answer(result)
        elif self.fate == "completes":
            self._end("deferred", result.reason)
        else:
            self._end("failed", "the phone cannot keep a pending key")


def _views(store, name: str, moment: str) -> dict:
    """csr id -> status of the phone's requests as the CSR listing reports them at ``moment``, after
    checking that the requests waiting for a signature (``capf_info``'s ``pending_csrs``) are those it
    reports ``pending``."""
    with store.read() as tx:
        listed = {row["id"]: row["status"] for row in csr_records.listing(tx, None, now=moment,
                                                                          clock_skew=store.clock_skew)
                  if row["device_name"] == name}
        awaiting = {row["id"] for row in csr_records.awaiting_signature(tx, now=moment, clock_skew=store.clock_skew)
                    if row["device_name"] == name}
    gathered = {row["id"] for row in reports.gather(store, ["pending_csrs"], now=moment)["pending_csrs"]
                if row["device_name"] == name}
    pending = {csr_id for csr_id, status in listed.items() if status == "pending"}
    assert awaiting == gathered == pending, (listed, awaiting, gathered)
    return listed


def _recorded(store, name: str) -> dict:
    with store.read() as tx:
        return {row["id"]: row["status"] for row in tx.query(
            "SELECT r.id, r.status FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ?", (name,))}


def _may_wait(legs, recorded: dict, operation_status: str) -> set:
    """The requests that may still be reported pending: the phone's newest, made or adopted by a session
    that ended deferred, while its operation waits for the phone's next session."""
    if operation_status != "pending" or not recorded:
        return set()
    newest = max(recorded)
    return {newest} & set().union(*(leg.requests for leg in legs if leg.ended_as == "deferred"))


def _check_now(store, name: str, legs) -> None:
    moment = format_utc(dt.datetime.now(dt.timezone.utc))
    reported = _views(store, name, moment)
    status = phone_records.reported_operation(phone_row(store, name), moment, store.clock_skew)[0]
    if status == "succeeded":
        assert "pending" not in reported.values(), ([(leg.fate, leg.ended_as, leg.requests) for leg in legs], reported)


def _check_after_every_bound(store, name: str, legs) -> None:
    bound = phone_row(store, name)["operation_live_until"]
    latest = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=MAX_SESSION + LIVENESS_MARGIN_SECONDS)
    if bound is not None:
        latest = max(latest, dt.datetime.fromisoformat(bound.replace("Z", "+00:00")))
    moment = latest + store.clock_skew + SECOND
    reported = _views(store, name, format_utc(moment))
    settle_abandoned(store, moment)
    scheduler.lapse_deadlines(store, moment)
    recorded = _recorded(store, name)
    assert reported == recorded, (reported, recorded)
    assert _views(store, name, format_utc(moment)) == recorded
    waiting = {csr_id for csr_id, status in recorded.items() if status == "pending"}
    allowed = _may_wait(legs, recorded, phone_row(store, name)["operation_status"])
    assert waiting <= allowed, ([(leg.fate, leg.ended_as, leg.requests) for leg in legs], recorded,
                                phone_row(store, name)["operation_status"])


def _run(store, est, fates, held, schedule):
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    legs = [_Leg(store, est, name, fate, holds) for fate, holds in zip(fates, held)]
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
    _holds(est, False)
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL) for session_id in (1, 2))
    for step in range(3):  # each to its ENCRYPT_REQUEST (started, joined, key generated)
        first.step(0.1 * step)
    for step in range(3):
        second.step(0.1 * step)
    assert second.step(1.0) == "issued"
    _holds(est, True)
    first.step(1.1)
    assert first.done and first.server.outcome.outcome == "deferred"
    assert second.step(1.2) == "installed"
    assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    reported = _views(ca_store, name, format_utc(dt.datetime.now(dt.timezone.utc)))
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

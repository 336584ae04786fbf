"""A key request is never left pending forever, whatever the sessions of a reconnecting phone do.

A phone whose connection dies reconnects while its earlier session may still be live (its process may
serve it still, or may have died: nothing tells the two apart before that session's bound has passed).
Two or three sessions of one phone, with the offline CA, each take one of the fates below, their steps
interleaved in every order hypothesis chooses, on SQLite and on PostgreSQL. Invariant:

* no key request (CSR) of a session still live (neither ended nor dead) is ever reported ``failed`` by
  the views, at any step;
* once every session has ended or died and every session's bound has passed (by more than the store's
  clock skew), the views report each request of a session that died or ended without deferring as no
  longer waiting (``failed`` or ``superseded``), never ``pending``; the scheduler's round records what
  they reported; and a request still ``pending`` is the phone's one request, made by a session that
  ended deferred (the phone keeps its key and comes back for the CA's answer).

The sessions are the service's ``StoreDecider``, driven a step at a time as ``ServerSession`` drives
it (its start at authentication, the pending key's state, the CSR, the end); a session that dies
stops between two steps and records nothing more.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from support.sessions import DeciderLeg, in_turn
from support.third_party_ca import EnterprisePki, pem
from _opencapf import csr as csr_module
from _opencapf import phone_config, scheduler, service_config, trust
from _opencapf.dependencies import ec, serialization
from _opencapf.errors import StoreError
from _opencapf.protocol.session import AuthOffer, Deferred, KeyChoice
from _opencapf.server.decider import settle_abandoned
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, format_utc

pytestmark = pytest.mark.both_backends

MAX_SESSION = 60
SECOND = dt.timedelta(seconds=1)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# What becomes of a session: it dies (its process: SIGKILL, power loss) after its start or after sending
# its request; it ends deferred (the CA holds its request); it ends failed after its request or before.
FATES = ("dies after its start", "dies after its request", "ends deferred", "ends failed after its request",
         "ends failed before its request")
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


class _Leg(DeciderLeg):
    """One session of the phone, a step at a time: start (authentication), the pending key's state,
    the request, the end."""

    def __init__(self, store, name: str, fate: str):
        super().__init__(store, name, fate, MAX_SESSION)

    @property
    def csr_id(self):
        return self.decider._csr_id  # pylint: disable=protected-access

    def _steps(self):
        self.plan = self.decider.begin(self.name)
        assert not self.plan.refusal, self.plan
        assert self.decider.authenticate(self.plan, AuthOffer(self.name.encode(), None)).ok
        yield
        if self.fate == "dies after its start":
            self.done = True
            return
        state = self.decider.third_party_state(self.plan)
        yield
        if isinstance(state, Deferred):  # the CA holds the request of the key the phone kept
            self._end("deferred", state.reason)
            return
        assert state is None, state
        if self.fate == "ends failed before its request":
            self._end("failed", "the phone hung up while generating its key")
            return
        key = ec.generate_private_key(ec.SECP256R1())
        request = self.decider.prepare_csr(self.plan, key.public_key().public_bytes(*_SPKI), KeyChoice("ec", 256))
        signature = csr_module.phone_sign(request.info, key, "sha256", request.key_type_code)
        try:
            result = self.decider.submit_csr(self.plan, request, signature)
        except StoreError as exc:  # the request was not sent
            self._end("failed", str(exc))
            return
        assert isinstance(result, Deferred), result
        yield
        if self.fate == "dies after its request":
            self.done = True
        elif self.fate == "ends deferred":
            self._end("deferred", result.reason)
        else:
            self._end("failed", "the phone cannot keep a pending key")


def _reported(store, name: str, moment: str) -> dict:
    """csr id -> (status, reason) of the phone's requests as every CSR view reports them at ``moment``."""
    with store.read() as tx:
        return {row["id"]: (row["status"], row["reason"])
                for row in csr_records.listing(tx, None, now=moment, clock_skew=store.clock_skew)
                if row["device_name"] == name}


def _recorded(store, name: str) -> dict:
    with store.read() as tx:
        return {row["id"]: (row["status"], row["reason"]) for row in tx.query(
            "SELECT r.id, r.status, r.reason FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ?", (name,))}


def _run(store, fates, schedule):
    name = f"SEP{next(_names):012X}"
    phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                 "ec_key_size": 256})
    legs = [_Leg(store, name, fate) for fate in fates]
    for leg in in_turn(legs, schedule):
        leg.step()
        now = format_utc(dt.datetime.now(dt.timezone.utc))
        reported = _reported(store, name, now)
        for other in legs:  # no request of a live session is reported failed
            if not other.done and other.csr_id is not None:
                assert reported[other.csr_id][0] != "failed", (other.fate, reported[other.csr_id])
    return name, legs


def _check_after_every_bound(store, name, legs) -> None:
    with store.read() as tx:
        bound = phone_records.get(tx, name)["operation_live_until"]
    latest = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=MAX_SESSION + LIVENESS_MARGIN_SECONDS)
    moment = max(latest, dt.datetime.fromisoformat(bound.replace("Z", "+00:00"))) + store.clock_skew + SECOND
    when = format_utc(moment)
    reported = _reported(store, name, when)
    settle_abandoned(store, moment)
    scheduler.lapse_deadlines(store, moment)
    recorded = _recorded(store, name)
    assert reported == recorded, (reported, recorded)
    assert _reported(store, name, when) == recorded
    waiting = {csr_id for csr_id, (status, _reason) in recorded.items() if status == "pending"}
    left_waiting = {leg.csr_id for leg in legs if leg.ended_as == "deferred" and leg.csr_id is not None}
    assert len(waiting) <= 1, recorded
    assert waiting <= left_waiting, ([(leg.fate, leg.ended_as, leg.csr_id) for leg in legs], recorded)
    for leg in legs:
        if leg.csr_id is not None and leg.ended_as != "deferred":
            assert recorded[leg.csr_id][0] in ("failed", "superseded"), (leg.fate, recorded[leg.csr_id])


def test_a_request_of_a_session_that_died_is_not_left_pending_by_a_session_begun_before_its_bound(ca_store, pki):
    """The earlier session sent its request and died; the phone's next session begins before the earlier
    one's bound and ends: the dead session's request does not wait for good."""
    trust.converge(ca_store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(ca_store, parameters_wanted={"issuer": "offline_ca"})
    name, legs = _run(ca_store, ["dies after its request", "ends failed before its request"], [0, 0, 0, 1, 1, 1])
    _check_after_every_bound(ca_store, name, legs)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FATES), min_size=2, max_size=3),
       st.lists(st.integers(min_value=0, max_value=2), max_size=16))
@example(["dies after its request", "ends deferred"], [0, 0, 0, 1, 1, 1])
@example(["dies after its request", "dies after its start"], [0, 0, 0, 1])
@example(["ends deferred", "dies after its request"], [0, 1, 1, 1, 0])
@example(["dies after its start", "dies after its request"], [0, 1, 1, 1, 0])
def test_no_request_waits_for_good_whatever_the_sessions_of_a_reconnecting_phone_do(ca_store, pki, fates, schedule):
    trust.converge(ca_store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(ca_store, parameters_wanted={"issuer": "offline_ca"})
    name, legs = _run(ca_store, fates, schedule)
    _check_after_every_bound(ca_store, name, legs)

"""Once a phone's operation is recorded succeeded, none of its key requests waits, and no certificate for one
that waited then is ever the phone's.

A phone's sessions follow one another, each with the issuer the operator names as it begins: the CAPF, the
online EST CA (holding the request, or signing it at once) or the offline CA. A session completes (with a
third-party CA that holds its request: ends deferred, the phone keeping its key to come back), ends without
the phone storing its LSC (or keeping a pending key), or its process dies after its start or after its
request. Between sessions the operator names the online CA again and the enrolment service polls it (the CA
signs what it held, or holds it still), the offline CA's operator signs every exported request and imports
the certificates, or the operator arms the operation again. Sessions, issuer switches and answers in every
order hypothesis chooses, on SQLite and on PostgreSQL. Invariant:

* once the phone's operation is recorded ``succeeded``, none of its key requests is ``pending``, stored or
  as any view reports it (the CSR listing, the requests waiting for a signature, ``capf_info``
  ``pending_csrs``): the success superseded each that waited, also one an earlier session left at a CA
  as it ended deferred before the phone got its LSC elsewhere (a ``csr.superseded`` event,
  ``csrs.COMPLETED``);
* no certificate for a request that waited when the operation succeeded (other than the one the success
  installed) is ever recorded for that request, is the phone's current LSC, or is delivered, whatever the
  online CA or the offline CA's operator answers for it later: a CA's answer is for the right device and
  the right key, and the phone holds another key now.

The sessions are the service's ``StoreDecider``, driven a step at a time as ``ServerSession`` drives it
(``support.install_sessions``); the focused test follows the example of one phone.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from support.clock import virtual_clock
from support.install_sessions import (FATES, InstallLeg, certificates_of_requests, holds, recorded_requests,
                                      reported_requests)
from support.protocol import add_phone, phone_row
from support.store_phones import change_phone
from support.third_party_ca import EnterprisePki, pem, use_online_est
from _opencapf import csr as csr_module
from _opencapf import enrolment, phone_config, service_config
from _opencapf.dependencies import x509
from _opencapf.issuers import base
from _opencapf.store import certificates as certificate_records
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc, utc_now

pytestmark = pytest.mark.both_backends

MAX_SESSION = 60
STEP_SECONDS = 2  # the time a step of the phone's story takes
ISSUERS = ("capf", "online_ca", "offline_ca")
POLL, IMPORT, REARM = "the enrolment service polls the online CA", "the offline CA's operator imports", "re-armed"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


@pytest.fixture
def clock(monkeypatch):
    """The engine's clock, which each step of the phone's story moves on (so that a later session begins in a
    later second than the requests of the one before)."""
    return virtual_clock(monkeypatch)


def _issuer(store, issuer: str) -> None:
    service_config.converge(store, parameters_wanted={"issuer": issuer})


def _import_all(store, pki, name: str) -> None:
    """The offline CA's operator signs every request of the phone the export lists and imports the certificates."""
    for request in enrolment.pending_csrs(store, [name]):
        certificate = pki.sign_request(x509.load_pem_x509_csr(request.request))
        enrolment.import_certificates(store, "test", [(f"{request.device_name}.pem", pem(certificate).encode())])


def _current_lsc(store, name: str) -> int | None:
    with store.read() as tx:
        return tx.scalar(f"SELECT l.id FROM phones p JOIN certificates l ON l.phone_id = p.id AND "
                         f"{certificate_records.CURRENT_LSC} WHERE p.name = ?", (name,))


class _Phone:
    """One phone and what happened to it: its sessions, and the requests that waited when its operation
    was recorded succeeded (less the one whose LSC the success installed)."""

    def __init__(self, store, est, pki, clock):
        self.store, self.est, self.pki, self.clock = store, est, pki, clock
        self.name = f"SEP{next(_names):012X}"
        add_phone(store, self.name, operation="install_upgrade", key_order="ec")
        self.legs: list[InstallLeg] = []
        self.waited_at_success: set = set()

    def _pending(self) -> set:
        return {csr_id for csr_id, status in recorded_requests(self.store, self.name).items() if status == "pending"}

    def run(self, step: tuple) -> None:
        self.clock.now += STEP_SECONDS
        before = self._pending()
        succeeded_before = phone_row(self.store, self.name)["operation_status"] == "succeeded"
        delivered = set()
        if step[0] == "session":
            _kind, issuer, fate, held = step
            _issuer(self.store, issuer)
            leg = InstallLeg(self.store, self.est, self.name, fate, held, MAX_SESSION)
            self.legs.append(leg)
            while not leg.done:
                leg.step()
            delivered = set(leg.delivered)
        elif step[0] == POLL:
            _issuer(self.store, "online_ca")
            holds(self.est, not step[1])
            enrolment.worker_step(self.store)
        elif step[0] == IMPORT:
            _import_all(self.store, self.pki, self.name)
        else:
            with self.store.transaction() as tx:
                change_phone(tx, self.name, reissue=True)
        if phone_row(self.store, self.name)["operation_status"] == "succeeded" and not succeeded_before:
            installed = {csr_id for csr_id, (certificate_id, _status) in certificates_of_requests(
                self.store, self.name).items() if certificate_id in delivered}
            self.waited_at_success |= (before | self._pending()) - installed

    def check(self) -> None:
        moment = format_utc(utc_now())
        reported = reported_requests(self.store, self.name, moment)
        recorded = recorded_requests(self.store, self.name)
        row = phone_row(self.store, self.name)
        story = [(leg.plan and leg.plan.issuer, leg.fate, leg.ended_as, sorted(leg.requests)) for leg in self.legs]
        if phone_records.reported_operation(row, moment, self.store.clock_skew)[0] == "succeeded":
            assert "pending" not in reported.values(), ("reported pending once succeeded", story, reported)
            assert "pending" not in recorded.values(), ("stored pending once succeeded", story, recorded)
        recorded_for = certificates_of_requests(self.store, self.name)
        current = _current_lsc(self.store, self.name)
        delivered = set().union(*(leg.delivered for leg in self.legs))
        for csr_id in self.waited_at_success:
            assert csr_id not in recorded_for, ("a certificate for a request that waited at the success", csr_id,
                                                recorded_for[csr_id], story)
        with self.store.read() as tx:
            for certificate_id in delivered | ({current} - {None}):
                request = csr_records.for_certificate(tx, certificate_id)
                assert request is None or request["id"] not in self.waited_at_success, (
                    "the phone's LSC, or delivered, for a request that waited at the success", certificate_id, story)


_sessions = st.tuples(st.just("session"), st.sampled_from(ISSUERS), st.sampled_from(FATES), st.booleans())
_steps = st.lists(st.one_of(_sessions, _sessions, st.tuples(st.just(POLL), st.booleans()), st.just((IMPORT,)),
                            st.just((REARM,))), min_size=1, max_size=7)
# The online CA holds the first session's request, which ends deferred; the operator switches the issuer to
# the CAPF and the phone's next session gets its LSC there; the operator names the online CA again and the
# enrolment service polls it, which signs the request now.
ONLINE_THEN_CAPF = [("session", "online_ca", "completes", True), ("session", "capf", "completes", False), (POLL, True)]
# The same with the offline CA, whose operator signs the exported requests after the phone got its LSC.
OFFLINE_THEN_CAPF = [("session", "offline_ca", "completes", False), ("session", "capf", "completes", False), (IMPORT,)]


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_steps)
@example(ONLINE_THEN_CAPF)
@example(OFFLINE_THEN_CAPF)
# The phone's LSC from the CAPF, then armed again and enrolled with the online CA, the earlier request's
# answer arriving between.
@example([("session", "online_ca", "completes", True), ("session", "capf", "completes", False), (REARM,), (POLL, True),
          ("session", "online_ca", "completes", False)])
def test_no_request_waits_and_none_is_answered_once_the_operation_succeeded(ca_store, pki, est, clock, steps):
    use_online_est(ca_store, pki, est)
    phone = _Phone(ca_store, est, pki, clock)
    try:
        for step in steps:
            phone.run(step)
            phone.check()
    finally:  # its requests still at the CA no longer wait: the enrolment service of later examples leaves them
        with ca_store.transaction() as tx:
            phone_config.remove(tx, "test", phone.name, via="capf_phone")


def test_a_request_left_at_the_ca_is_superseded_when_the_phone_gets_its_lsc_elsewhere(ca_store, pki, est, clock):
    """The example of the online CA: the held request is superseded by the success (``csrs.COMPLETED``), the
    enrolment service no longer polls it, and its certificate, should the CA sign it anyway, is stale and
    never the phone's."""
    use_online_est(ca_store, pki, est)
    phone = _Phone(ca_store, est, pki, clock)
    phone.run(ONLINE_THEN_CAPF[0])
    (held,) = phone.legs[0].requests
    phone.run(ONLINE_THEN_CAPF[1])
    assert phone_row(ca_store, phone.name)["operation_status"] == "succeeded"
    assert recorded_requests(ca_store, phone.name)[held] == "superseded"
    with ca_store.read() as tx:
        (event,) = tx.query("SELECT actor, details FROM audit_events WHERE action = 'csr.superseded' AND subject = ?",
                            (phone.name,))
    assert f'"csr_id": {held}' in event["details"] and csr_records.COMPLETED in event["details"], event
    lsc = _current_lsc(ca_store, phone.name)
    phone.run(ONLINE_THEN_CAPF[2])
    assert _current_lsc(ca_store, phone.name) == lsc
    assert held not in certificates_of_requests(ca_store, phone.name)
    # Not polled: the CA was never asked again about it, so it signed nothing.
    assert not est.issued
    # The CA's answer, had the service asked it: recorded stale, on no request, never the phone's.
    with ca_store.read() as tx:
        (row,) = tx.query("SELECT csr_pem FROM csrs WHERE id = ?", (held,))
    request = csr_module.verify(row["csr_pem"].encode(), "stored CSR")
    answer = base.Issued(pki.sign_request(request), [pki.issuing], "late")
    with ca_store.read() as tx:
        owner = phone_records.get(tx, phone.name)
    replaced = enrolment._settle(ca_store, "test", owner, held, answer, request)  # pylint: disable=protected-access
    assert isinstance(replaced, enrolment.Replaced)
    assert _current_lsc(ca_store, phone.name) == lsc
    with ca_store.read() as tx:
        statuses = [row["status"] for row in tx.query(
            "SELECT c.status FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE p.name = ? "
            "AND c.source = 'online_ca'", (phone.name,))]
    assert statuses == ["stale"]
    phone.check()

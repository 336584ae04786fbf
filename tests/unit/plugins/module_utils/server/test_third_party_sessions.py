"""Sessions of one phone with a third-party CA (X-CSR/1): whatever order their exchanges run in, and
whenever the CA signs or holds the requests, what the service delivers to the phone and what the
store reports of it is what the phone holds.

A phone that keeps a pending key (X_CAPS bit 2) gets its LSC in the session that sent the CSR when the
CA signs at once, or in a later session once the CA has signed the request it held; a phone that keeps
none only in the session that sent the CSR. Two or three sessions of the phone overlap (a dropped
connection the server has not noticed yet, a retry), each completing, losing power before its key or
before storing its LSC, or answering that it did not store it; between any two exchanges the online CA
(a loopback EST server, ``support.third_party_ca``) starts or stops holding requests, or the enrolment
service polls it, or the offline CA's operator signs and imports the exported CSRs. The invariants, on
both backends:

* every LSC delivered to the phone carries the key the phone stores it with: the session's own, or
  the pending key it keeps;
* at most one LSC of the phone is ``installed``, and it is the one the phone holds (never ``stale``
  nor ``revoked``);
* an LSC waiting for the phone (``issued``) carries the key the phone keeps pending, and it is the one
  the phone's next session delivers;
* the CSRs waiting for a signature (``capf_info`` ``pending_csrs``) are at most the phone's newest one,
  for the key it keeps pending; none for a phone that keeps no pending key;
* the phone's current LSC in the listings is the one it holds or the one waiting for it;
* no operation is left ``in_progress``; once the CA signs, further sessions leave the phone holding
  an installed LSC and its operation ``succeeded``.

Focused tests below let the CA's answer arrive after a session of the phone sent a newer CSR, or after
another answer for the same request was delivered (the real client of the loopback CA, its answer held
back until the session's exchanges ran), and let an offline import match while a session replaces the
CSR (its ``progress`` callback).

The sessions are the service's own sans-I/O ``ServerSession`` with its ``StoreDecider``, and the
simulator's ``PhoneSession`` around one ``PhoneIdentity``, driven an exchange at a time as in
``test_overlapping_sessions.py``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone, certificate_rows, phone_row
from support.sessions import BEHAVIOURS, SessionLeg
from support.third_party_ca import PASSWORD, USERNAME, EnterprisePki, EstServer, pem
from _opencapf import csr as csr_module
from _opencapf import enrolment, reports, service_config, trust
from _opencapf.ca import certificates as c
from _opencapf.protocol.constants import XCAP_PENDING_KEY, XCAPS_ALL
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import csrs as csr_records

pytestmark = pytest.mark.both_backends

HOLDS, SIGNS, POLLS = "the CA holds requests", "the CA signs", "the enrolment service polls"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


@pytest.fixture
def est(pki, tmp_path):
    with EstServer(pki, str(tmp_path / "est"), username=USERNAME, password=PASSWORD) as server:
        server.retry_after = 3600  # a request the CA holds is picked up in a later session, not polled in this one
        yield server


def _online(store, pki, est) -> None:
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "online_ca"},
                            online_ca={"hostname": "localhost", "port": est.port, "type": "est",
                                       "username": USERNAME, "password": PASSWORD})


def _key(key) -> bytes | None:
    return None if key is None else c.public_key_der(key.public_key())


def _offline(store, pki) -> None:
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "offline_ca"})


def _ca(est, event: str, store, pki=None) -> None:
    """The CA's event: for the online CA (``pki`` None) holding or signing the requests it gets, or a
    pass of the enrolment service; for the offline CA, its operator signing every CSR exported now
    and importing the certificates (``SIGNS``; the others change nothing)."""
    if pki is not None:
        if event == SIGNS:
            signed = [pki.sign_request(csr_module.verify(item.request)) for item in enrolment.pending_csrs(store)]
            enrolment.import_certificates(store, "operator", [("signed.pem", "".join(map(pem, signed)).encode())])
    elif event == HOLDS:
        est.pending_first = 10 ** 6
    elif event == SIGNS:
        est.pending_first = 0
    else:
        enrolment.worker_step(store)


def _run(store, est, behaviours: list[str], schedule: list, holds: bool, x_caps: int = XCAPS_ALL, pki=None):
    """The sessions, stepped in the order ``schedule`` names them, the CA's events between them (then
    in turn until all end). Returns the phone's name and identity."""
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS if holds else SIGNS, store)
    legs = [SessionLeg(store, identity, 100 + index, behaviour, x_caps=x_caps)
            for index, behaviour in enumerate(behaviours)]
    now = 0.0
    for item in itertools.chain(schedule, itertools.cycle(range(len(legs)))):
        if all(leg.done for leg in legs):
            break
        if isinstance(item, str):
            _ca(est, item, store, pki)
            continue
        leg = legs[item % len(legs)]
        if leg.done:
            continue
        now += 0.01
        if leg.step(now) == "issued":
            _check_delivery(leg, identity)
    return name, identity


def _check_delivery(leg: SessionLeg, identity: PhoneIdentity) -> None:
    """The LSC a session sends carries the key the phone stores it with: the session's own, or its pending one."""
    key = leg.phone._new_key or identity.pending_key()  # pylint: disable=protected-access
    assert c.public_key_der(leg.certificate.public_key()) == _key(key), "delivered an LSC for a key the phone lacks"


def _check(store, name: str, identity: PhoneIdentity, keeps: bool = True) -> None:
    """The invariants; ``keeps``: whether the phone keeps a pending key (X_CAPS bit 2)."""
    phone = phone_row(store, name)
    rows = certificate_rows(store, name)
    held = None if identity.lsc is None else c.fingerprint(identity.lsc)
    pending_key = _key(identity.pending_key())
    assert phone["operation_status"] != "in_progress", phone
    status = {row["fingerprint"]: row["status"] for row in rows}
    assert [row["fingerprint"] for row in rows if row["status"] == "installed"] == ([held] if held else []), status
    waiting = [row for row in rows if row["status"] == "issued"]
    # A phone that keeps no pending key: an LSC sent to a session cut before the phone stored it stays
    # ``issued``, as a CAPF-issued one does.
    for row in waiting if keeps else ():
        key = c.public_key_der(c.load_pem_certificate(row["pem"]).public_key())
        assert key == pending_key, ("an LSC waits for a key the phone does not keep", status)
    with store.read() as tx:
        awaiting = [row for row in csr_records.awaiting_signature(tx) if row["device_name"] == name]
        latest = csr_records.latest_signed(tx, phone["id"])
        state = enrolment.next_for_phone(tx, phone)
        (listed,) = reports.phone_rows(tx, {"names": [name]})
    assert [row["id"] for row in awaiting] in ([], [latest and latest["id"]]), awaiting
    for row in awaiting:  # a phone that keeps no pending key never comes back for a certificate
        assert keeps and row["public_key_fingerprint"] == c.sha256_hex(pending_key or b""), \
            ("a CSR waits for a key the phone dropped", awaiting)
    if waiting and keeps:
        assert isinstance(state, enrolment.Ready) and [state.certificate_id] == [row["id"] for row in waiting]
    # The phone's current LSC in the listings: the one it holds or the one waiting for it (whichever
    # came last), never one it will not get.
    expected = [(row["serial"], "issued") for row in waiting] + \
        [(row["serial"], "installed") for row in rows if row["status"] == "installed"]
    current = listed["lsc"] and (listed["lsc"]["serial"], listed["lsc"]["status"])
    assert current in (expected or [None]), (current, status)


def _finish(store, est, name: str, identity: PhoneIdentity, x_caps: int = XCAPS_ALL, pki=None) -> None:
    """The CA signs; sessions of the phone follow until one ends its operation (at most four)."""
    for session_id in range(900, 904):
        if phone_row(store, name)["operation_status"] == "succeeded":
            break
        _ca(est, SIGNS, store, pki)
        leg = SessionLeg(store, identity, session_id, "completes", x_caps=x_caps)
        now = 0.0
        while not leg.done:
            now += 0.01
            if leg.step(now) == "issued":
                _check_delivery(leg, identity)
    assert phone_row(store, name)["operation_status"] == "succeeded", phone_row(store, name)
    assert identity.lsc is not None


SCHEDULE = st.lists(st.one_of(st.integers(min_value=0, max_value=2), st.sampled_from([HOLDS, SIGNS, POLLS])),
                    max_size=24)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(BEHAVIOURS)), min_size=2, max_size=3), SCHEDULE, st.booleans(), st.booleans(),
       st.booleans())
# The CA held the first session's request; two later sessions both deliver the LSC it signed meanwhile.
@example(["completes", "completes", "completes"], [0, 0, 0, 0, SIGNS, 1, 2, 1, 2, 1, 2], True, True, False)
# A phone that keeps no pending key: the CA holds both sessions' CSRs, and both sessions fail.
@example(["completes", "completes"], [], True, False, False)
def test_whatever_the_interleaving_the_phone_gets_and_the_store_reports_its_own_lsc(
        ca_store, pki, est, behaviours, schedule, holds, keeps, offline):
    """``keeps``: the phone keeps a pending key (an offline CA's phone always does); ``offline``: the
    offline CA, whose operator signs and imports what is exported whenever the schedule says the CA signs."""
    if offline:
        _offline(ca_store, pki)
    else:
        _online(ca_store, pki, est)
    keeps = keeps or offline
    x_caps = XCAPS_ALL if keeps else XCAPS_ALL & ~XCAP_PENDING_KEY
    operator = pki if offline else None
    name, identity = _run(ca_store, est, behaviours, schedule, holds, x_caps, operator)
    _check(ca_store, name, identity, keeps)
    _finish(ca_store, est, name, identity, x_caps, operator)
    _check(ca_store, name, identity, keeps)


def _steps(leg: SessionLeg, count: int, now: float = 0.0) -> None:
    for step in range(count):
        leg.step(now + 0.01 * (step + 1))


def test_a_csr_no_session_can_deliver_is_not_listed_pending(ca_store, pki, est):
    """A phone that keeps no pending key: the CA holds the CSRs of two overlapping sessions, and each
    session fails (the phone cannot wait for the certificate). The first failure settles the operation;
    the second session's CSR fails too, and neither is listed among the CSRs waiting for a signature."""
    _online(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS, ca_store)
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL & ~XCAP_PENDING_KEY)
                     for session_id in (1, 2))
    _steps(first, 3)
    _steps(second, 3)  # both keys generated
    _steps(first, 1)
    _steps(second, 1)  # both CSRs held by the CA; both sessions end failed
    assert first.done and second.done
    assert phone_row(ca_store, name)["operation_status"] == "failed"
    with ca_store.read() as tx:
        statuses = [row["status"] for row in csr_records.listing(tx, None) if row["device_name"] == name]
    assert statuses == ["failed", "failed"]
    listed = reports.gather(ca_store, ["pending_csrs"])["pending_csrs"]
    assert [row for row in listed if row["device_name"] == name] == []
    assert enrolment.poll_pending(ca_store, "enrolment-service") == {"issued": 0, "pending": 0, "failed": 0}


def test_offline_import_of_a_csr_replaced_meanwhile_is_stale(ca_store, pki):
    """An import reads the pending CSRs, and while it matches the files a session of the phone sends a
    newer CSR: the certificate for the replaced one is recorded stale, never waiting for the phone."""
    _offline(ca_store, pki)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL) for session_id in (1, 2))
    _steps(second, 2)  # AUTH: nothing waits yet, so the session asks for a new key
    _steps(first, 4)  # a new key, its CSR sent to the offline CA; RETRY_LATER
    (item,) = enrolment.pending_csrs(ca_store)
    signed = pki.sign_request(csr_module.verify(item.request))
    replaced = []

    def meanwhile(stage, _done=0, _total=0):
        if stage == "matching" and not replaced:
            _steps(second, 2)  # the second session's key and CSR: the first CSR is superseded
            replaced.append(True)

    result = enrolment.import_certificates(ca_store, "operator", [("lsc.pem", pem(signed).encode())],
                                           progress=meanwhile)
    assert replaced and second.done
    assert result.matched == [] and [device for _source, device, _reason in result.stale] == [name]
    rows = certificate_rows(ca_store, name)
    assert [row["status"] for row in rows] == ["stale"], rows
    with ca_store.read() as tx:
        statuses = [row["status"] for row in csr_records.listing(tx, None) if row["device_name"] == name]
    assert statuses == ["superseded", "pending"]
    _check(ca_store, name, identity)


class _Late:
    """The real client of the loopback CA, whose first answer reaches the service only after ``meanwhile()``
    ran (a session of the phone under way while the HTTP answer is on its way)."""

    def __init__(self, issuer, meanwhile):
        self.issuer, self.meanwhile = issuer, meanwhile

    def _late(self, answer):
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return answer

    def submit(self, request_der, *, renewal=False):
        return self._late(self.issuer.submit(request_der, renewal=renewal))

    def poll(self, reference, request_der):
        return self._late(self.issuer.poll(reference, request_der))

    def close(self):
        self.issuer.close()


def test_online_answer_in_session_after_a_newer_csr_is_not_delivered(ca_store, pki, est, monkeypatch):
    """The CA signs a session's CSR, and its answer comes after another session of the phone sent a newer
    CSR: the older CSR's certificate is stale and never delivered; the newer one is."""
    _online(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL) for session_id in (1, 2))
    _steps(second, 2)
    _steps(first, 3)  # the first session's key; its phone signs the CSR in the next exchange
    build = enrolment.online_issuer
    late = []

    def online_issuer(store, timeout=None):
        if late:
            return build(store, timeout)
        late.append(True)
        return _Late(build(store, timeout), lambda: _steps(second, 2))  # the second key and CSR, signed at once

    monkeypatch.setattr(enrolment, "online_issuer", online_issuer)
    _steps(first, 1)
    _steps(second, 1)  # the second session's phone stores its LSC
    assert first.done and second.done
    assert first.certificate is None, "the LSC of the replaced CSR was delivered"
    statuses = {c.fingerprint(c.load_pem_certificate(row["pem"])): row["status"]
                for row in certificate_rows(ca_store, name)}
    assert statuses.pop(c.fingerprint(identity.lsc)) == "installed"
    assert list(statuses.values()) == ["stale"], statuses
    assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    _check(ca_store, name, identity)


def test_online_answer_for_a_csr_replaced_meanwhile_is_stale(ca_store, pki, est):
    """The enrolment service asks the CA about a held request, and the CA's answer comes after a session of
    the phone sent a newer CSR: the certificate for the replaced one is recorded stale, never waiting."""
    _online(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS, ca_store)
    first, second = (SessionLeg(ca_store, identity, session_id, x_caps=XCAPS_ALL) for session_id in (1, 2))
    _steps(second, 2)
    _steps(first, 4)  # the CA holds the first CSR
    _ca(est, SIGNS, ca_store)
    issuer = enrolment.online_issuer(ca_store)
    try:
        # The answer comes after the second session's key and CSR, which the CA signs at once, and its LSC stored.
        counts = enrolment.poll_pending(ca_store, "enrolment-service", issuer=_Late(issuer, lambda: _steps(second, 3)))
    finally:
        issuer.close()
    assert second.done
    assert counts == {"issued": 0, "pending": 0, "failed": 0, "stale": 1}, counts
    statuses = {c.fingerprint(c.load_pem_certificate(row["pem"])): row["status"]
                for row in certificate_rows(ca_store, name)}
    assert statuses.pop(c.fingerprint(identity.lsc)) == "installed"
    assert list(statuses.values()) == ["stale"], statuses
    with ca_store.read() as tx:
        statuses = [row["status"] for row in csr_records.listing(tx, None) if row["device_name"] == name]
    assert statuses == ["superseded", "issued"]
    _check(ca_store, name, identity)


def test_a_second_answer_for_a_request_already_answered_is_stale(ca_store, pki, est):
    """The enrolment service and a session of the phone both ask the CA about the held request; the CA
    signs it for each (an EST CA signs a request sent again anew), and the service's answer comes after
    the session delivered the first certificate and the phone stored it: the second one is stale, and
    the CSR names the certificate the phone holds."""
    _online(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS, ca_store)
    _steps(SessionLeg(ca_store, identity, 1, x_caps=XCAPS_ALL), 4)  # the CA holds the CSR; RETRY_LATER
    _ca(est, SIGNS, ca_store)
    second = SessionLeg(ca_store, identity, 2, x_caps=XCAPS_ALL)
    issuer = enrolment.online_issuer(ca_store)
    try:
        # The session polls the CA itself, delivers the LSC to the pending key, and the phone stores it.
        counts = enrolment.poll_pending(ca_store, "enrolment-service", issuer=_Late(issuer, lambda: _steps(second, 3)))
    finally:
        issuer.close()
    assert second.done and len(est.issued) == 2
    assert counts == {"issued": 0, "pending": 0, "failed": 0, "stale": 1}, counts
    statuses = {c.fingerprint(c.load_pem_certificate(row["pem"])): row["status"]
                for row in certificate_rows(ca_store, name)}
    # est.issued[0]: the service's answer, signed first and received last
    assert statuses == {c.fingerprint(est.issued[1]): "installed", c.fingerprint(est.issued[0]): "stale"}, statuses
    assert c.fingerprint(identity.lsc) == c.fingerprint(est.issued[1])
    (installed,) = [row["id"] for row in certificate_rows(ca_store, name) if row["status"] == "installed"]
    with ca_store.read() as tx:
        (csr,) = [row for row in csr_records.listing(tx, None) if row["device_name"] == name]
    assert (csr["status"], csr["certificate_id"]) == ("issued", installed)
    _check(ca_store, name, identity)

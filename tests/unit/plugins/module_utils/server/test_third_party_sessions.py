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
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone, certificate_rows, phone_row
from support.sessions import BEHAVIOURS, SessionLeg
from support.store_phones import change_phone
from support.third_party_ca import EnterprisePki, pem, use_online_est
from _opencapf import csr as csr_module
from _opencapf import bulk, enrolment, phone_config, reports, scheduler, service_config, trust
from _opencapf.ca import certificates as c
from _opencapf.declarative import deployment, document
from _opencapf.protocol.constants import XCAP_PENDING_KEY, XCAPS_ALL
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import audit
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import utc_now

pytestmark = pytest.mark.both_backends

HOLDS, SIGNS, POLLS = "the CA holds requests", "the CA signs", "the enrolment service polls"
# The operator's changes of the phone (``phone_config``, the one converge path of its settings).
TO_DELETE, TO_NONE, TO_INSTALL = ("the operator declares delete", "the operator declares none",
                                  "the operator declares install_upgrade")
REISSUE = "the operator declares install_upgrade again with reissue"
REMOVE, ADD = "the operator removes the phone", "the operator adds the phone again"
KEY_SIZE = "the operator changes the phone's EC key size"
DESCRIBE = "the operator changes the phone's description"
OPERATOR = (TO_DELETE, TO_NONE, TO_INSTALL, REISSUE, REMOVE, ADD, KEY_SIZE, DESCRIBE)
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


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


def _run(store, est, behaviours: list[str], schedule: list, holds: bool, x_caps: int = XCAPS_ALL, pki=None,
         watch=None):
    """The sessions, stepped in the order ``schedule`` names them, the CA's events between them (then
    in turn until all end); the operator's events (``OPERATOR``) are ``watch.operator``'s, and
    ``watch.after(leg)`` checks the store after each item (``leg``: the one that delivered an LSC in
    it). Returns the phone's name and identity."""
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    if watch is not None:
        watch.name = name
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS if holds else SIGNS, store)
    legs = [SessionLeg(store, identity, 100 + index, behaviour, x_caps=x_caps)
            for index, behaviour in enumerate(behaviours)]
    now = 0.0
    for position, item in enumerate(itertools.chain(schedule, itertools.cycle(range(len(legs))))):
        if position >= len(schedule) and all(leg.done for leg in legs):
            break
        delivered = None
        if isinstance(item, str) and item in OPERATOR:
            watch.operator(item)
        elif isinstance(item, str):
            _ca(est, item, store, pki)
        else:
            leg = legs[item % len(legs)]
            if leg.done:
                continue
            now += 0.01
            if leg.step(now) == "issued":
                _check_delivery(leg, identity)
                delivered = leg
        if watch is not None:
            watch.after(delivered)
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
        use_online_est(ca_store, pki, est)
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
    use_online_est(ca_store, pki, est)
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
    use_online_est(ca_store, pki, est)
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
    use_online_est(ca_store, pki, est)
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
    use_online_est(ca_store, pki, est)
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


# -- the operator withdraws the operation a CSR was made for -------------------------------------------

FINISHED = ("succeeded", "failed", "lapsed", "none")


def _operate(store, name: str, event: str) -> None:
    """The operator's ``event`` through ``phone_config.converge``, the path every module takes."""
    phone = phone_row(store, name)
    if event == REMOVE:
        phone_config.converge(store, name, state="absent")
    elif event == ADD:
        phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec"})
    elif phone is None:
        return
    elif event == KEY_SIZE:
        phone_config.converge(store, name, settings={"ec_key_size": 384 if phone["ec_key_size"] == 256 else 256})
    elif event == DESCRIBE:
        phone_config.converge(store, name, settings={"description": f"desk {phone['description'] or ''}x"})
    else:
        operation = {TO_DELETE: "delete", TO_NONE: "none"}.get(event, "install_upgrade")
        phone_config.converge(store, name, settings={"certificate_operation": operation}, reissue=event == REISSUE)


def _withdrawn_by(event: str, phone: dict | None, row: dict) -> bool:
    """Whether the operator's ``event`` on ``phone`` (its row before) withdraws the phone's pending CSR
    ``row``: a new operation, a removal, a finished install armed again, a key the phone no longer asks for."""
    if phone is None or event in (DESCRIBE, ADD):
        return False
    if event == REMOVE:
        return True
    if event == KEY_SIZE:
        return row["key_size"] != (384 if phone["ec_key_size"] == 256 else 256)
    if event == REISSUE:
        return phone["operation"] != "install_upgrade" or phone["operation_status"] in FINISHED
    return phone["operation"] != {TO_DELETE: "delete", TO_NONE: "none"}.get(event, "install_upgrade")


class _Withdrawals:
    """The operator's events, and after every item of a run the invariant: a certificate a CA returns for
    a CSR made under an operation that is no longer the phone's current one (the keys in ``keys``) is
    never recorded ``issued`` or ``installed``, never delivered, never the phone's current LSC in the
    listings; no such CSR stays ``pending`` nor is exported for the offline CA."""

    def __init__(self, store):
        self.store = store
        self.name = ""
        self.keys: dict = {}  # public key fingerprint -> the phone's certificates (fingerprints) when withdrawn
        self.seen: set = set()  # the ids of the CSRs looked at
        self.certificates: set = set()  # the phone's certificates (fingerprints) when last looked at

    def _csrs(self) -> list[dict]:
        with self.store.read() as tx:
            rows = [row for row in csr_records.listing(tx, None) if row["device_name"] == self.name]
            for row in rows:
                key = c.load_public_key(tx.one("SELECT public_key FROM csrs WHERE id = ?", (row["id"],))["public_key"])
                row["key_size"] = c.key_description(key)[1]
        return rows

    def _withdraw(self, key: str, certificates=None) -> None:
        if certificates is None:
            certificates = {row["fingerprint"] for row in certificate_rows(self.store, self.name)}
        self.keys.setdefault(key, set(certificates))

    def operator(self, event: str) -> None:
        before = phone_row(self.store, self.name)
        pending = [row for row in self._csrs() if row["status"] == "pending"]
        _operate(self.store, self.name, event)
        after = {row["id"]: row["status"] for row in self._csrs()}
        for row in pending:
            if _withdrawn_by(event, before, row):
                assert after.get(row["id"]) in (None, "failed"), ("a withdrawn CSR still waits", event, row)
                self._withdraw(row["public_key_fingerprint"])
            else:
                assert after.get(row["id"]) == "pending", ("a CSR withdrawn by a change that keeps it", event, row)

    def after(self, delivered) -> None:
        phone = phone_row(self.store, self.name)
        rows = self._csrs()
        for row in rows:
            if row["id"] not in self.seen and phone is not None and (
                    phone["operation"] != "install_upgrade" or row["key_size"] != phone["ec_key_size"]):
                # Made by a session after the operator withdrew its operation: whatever its CA answered since is late.
                self._withdraw(row["public_key_fingerprint"], self.certificates)
            self.seen.add(row["id"])
            assert not (row["public_key_fingerprint"] in self.keys and row["status"] == "pending"), \
                ("a CSR waits for an operation that no longer exists", row)
        certificates = certificate_rows(self.store, self.name)
        self.certificates = {row["fingerprint"] for row in certificates}
        late = {row["fingerprint"]: row for row in certificates if row["public_key_fingerprint"] in self.keys
                and row["fingerprint"] not in self.keys[row["public_key_fingerprint"]]}
        assert all(row["status"] == "stale" for row in late.values()), \
            ("a withdrawn operation's certificate recorded as the phone's", late)
        if delivered is not None:
            assert c.fingerprint(delivered.certificate) not in late, "delivered a withdrawn operation's certificate"
        exported = [c.public_key_fingerprint(csr_module.verify(item.request).public_key())
                    for item in enrolment.pending_csrs(self.store, [self.name])]
        assert not set(exported) & set(self.keys), "exported a withdrawn CSR for the offline CA"
        if phone is not None:
            with self.store.read() as tx:
                (listed,) = reports.phone_rows(tx, {"names": [self.name]})
            assert not (listed["lsc"] and any(row["serial"] == listed["lsc"]["serial"] for row in late.values())), \
                ("a withdrawn operation's certificate listed as current", listed)


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(BEHAVIOURS)), min_size=1, max_size=3),
       st.lists(st.one_of(st.integers(min_value=0, max_value=2), st.sampled_from([HOLDS, SIGNS, POLLS]),
                          st.sampled_from(OPERATOR)), max_size=24),
       st.booleans(), st.booleans())
# The CA holds the CSR; the operator declares delete; the CA signs and the enrolment service polls.
@example(["completes"], [0, 0, 0, 0, TO_DELETE, SIGNS, POLLS], True, False)
# The operator declares delete while the session waits for the phone's signature of its CSR.
@example(["completes"], [0, 0, 0, TO_DELETE, SIGNS, 0, POLLS], False, False)
# The offline CA: the operator declares none, then the CA's operator signs and imports what is exported.
@example(["completes"], [0, 0, 0, 0, TO_NONE, SIGNS], True, True)
# The phone is removed and added again while the CA holds its CSR; the CA signs, the service polls.
@example(["completes", "completes"], [0, 0, 0, 0, REMOVE, ADD, SIGNS, POLLS, 1, 1, 1], True, False)
# A larger EC key is demanded while the CA holds the CSR of a 256-bit one.
@example(["completes"], [0, 0, 0, 0, KEY_SIZE, SIGNS, POLLS], True, False)
# The install failed in a later session; armed again with reissue while the CA holds the first CSR.
@example(["completes", "loses power before its key"], [0, 0, 0, 0, 1, 1, 1, REISSUE, SIGNS, POLLS], True, False)
def test_an_answer_for_a_withdrawn_operation_never_becomes_the_phones_lsc(
        ca_store, pki, est, behaviours, schedule, holds, offline):
    """Whatever the interleaving of sessions that send CSRs to a third-party CA that holds them, the
    operator's changes (another operation, a reissue, the phone removed and added again, a key size, a
    description), the CA signing, the enrolment service polling and the offline import: a certificate
    for a CSR made under an operation that is no longer the phone's current one is never recorded
    ``issued``, never delivered, never listed as current, and no CSR stays ``pending`` for an
    operation that no longer exists; a change that keeps the operation and its key keeps its CSRs.
    Then, with install_upgrade declared, the phone still gets its LSC and the store reports it."""
    if offline:
        _offline(ca_store, pki)
    else:
        use_online_est(ca_store, pki, est)
    watch = _Withdrawals(ca_store)
    name, identity = _run(ca_store, est, behaviours, schedule, holds, XCAPS_ALL, pki if offline else None, watch)
    _operate(ca_store, name, ADD)
    watch.after(None)
    _finish(ca_store, est, name, identity, XCAPS_ALL, pki if offline else None)
    watch.after(None)


def _held(store, est, name: str | None = None):
    """A phone whose install_upgrade CSR the online CA holds (its session deferred); returns its name,
    identity and the CSR's row."""
    name = name or f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    _ca(est, HOLDS, store)
    leg = SessionLeg(store, identity, 1, x_caps=XCAPS_ALL)
    _steps(leg, 4)
    assert leg.done
    return name, identity, _csr_rows(store, name)[0]


def _csr_rows(store, name: str) -> list[dict]:
    with store.read() as tx:
        return [row for row in csr_records.listing(tx, None) if row["device_name"] == name]


def _csr_events(store, name: str) -> list[dict]:
    with store.read() as tx:
        return [row["details"] for row in audit.events(tx, action="csr.failed", subject=name)]


def csr_phone_id(tx, csr_id: int) -> int:
    return tx.one("SELECT phone_id FROM csrs WHERE id = ?", (csr_id,))["phone_id"]


def _change(store, name: str, path: str, settings: dict) -> None:
    """``settings`` (option names) through ``path``: capf_phone's converge, a bulk job, the declarative file."""
    if path == "capf_phone":
        phone_config.converge(store, name, settings=settings)
    elif path == "bulk":
        bulk.converge(store, query={"names": [name]}, settings=settings)
    else:
        deployment.apply(store, document.parse(json.dumps({"opencapf": 1, "phones": [dict(settings, name=name)]})))


@pytest.mark.parametrize("path", ["capf_phone", "bulk", "apply"])
def test_a_new_operation_fails_the_csr_the_ca_holds_and_its_answer_is_stale(ca_store, pki, est, path):
    """The online CA holds the phone's install CSR and signs it; the enrolment service asks for it, and
    while the answer is on its way the operator declares delete (through each path that changes a
    phone's settings): the CSR is ``failed`` with the reason and a ``csr.failed`` audit event naming
    the path, no longer exported nor polled; the answer is recorded ``stale``, is not the phone's
    current LSC, and the phone's next session deletes."""
    use_online_est(ca_store, pki, est)
    name, identity, csr = _held(ca_store, est)
    _ca(est, SIGNS, ca_store)
    issuer = enrolment.online_issuer(ca_store)
    try:
        counts = enrolment.poll_pending(ca_store, "enrolment-service", issuer=_Late(
            issuer, lambda: _change(ca_store, name, path, {"certificate_operation": "delete"})))
    finally:
        issuer.close()
    assert counts == {"issued": 0, "pending": 0, "failed": 0, "stale": 1}, counts
    (row,) = _csr_rows(ca_store, name)
    reason = "the operator changed the phone's operation from install_upgrade to delete"
    assert (row["status"], row["reason"]) == ("failed", reason)
    assert _csr_events(ca_store, name) == [{"csr_id": csr["id"], "reason": reason, "via": path}]
    assert enrolment.pending_csrs(ca_store) == [] and reports.gather(ca_store, ["pending_csrs"])["pending_csrs"] == []
    assert enrolment.poll_pending(ca_store, "enrolment-service") == {"issued": 0, "pending": 0, "failed": 0}
    assert [row["status"] for row in certificate_rows(ca_store, name)] == ["stale"]
    with ca_store.read() as tx:
        (listed,) = reports.phone_rows(tx, {"names": [name]})
    assert listed["lsc"] is None
    leg = SessionLeg(ca_store, identity, 2, x_caps=XCAPS_ALL)
    _steps(leg, 6)
    assert leg.done and leg.certificate is None
    assert phone_row(ca_store, name)["operation_status"] == "succeeded"


def test_which_changes_withdraw_a_pending_csr(ca_store, pki, est):
    """Decided: a change that keeps the operation and still asks for the CSR's key keeps the CSR
    waiting (a description, an authentication mode, a deadline, the RSA size of a phone that asks for
    EC keys, ``reissue`` of an operation not yet finished); check mode of a withdrawing change reports
    it and writes nothing; a new EC size fails the CSR of the old one, with why."""
    use_online_est(ca_store, pki, est)
    name, _identity, csr = _held(ca_store, est)
    for settings, reissue in (({"description": "Lobby"}, False), ({"authentication_mode": "null_string"}, False),
                              ({"operation_completes_by": "2099-01-01"}, False), ({"rsa_key_size": 4096}, False),
                              ({"certificate_operation": "install_upgrade"}, True)):
        phone_config.converge(ca_store, name, settings=settings, reissue=reissue)
        assert [row["status"] for row in _csr_rows(ca_store, name)] == ["pending"], settings
    for settings in ({"certificate_operation": "none"}, {"ec_key_size": 384}):
        result = phone_config.converge(ca_store, name, settings=settings, check_mode=True)
        assert result["changed"] and [row["status"] for row in _csr_rows(ca_store, name)] == ["pending"], settings
    assert _csr_events(ca_store, name) == []
    with ca_store.read() as tx:  # a bulk job's many phones: every pending CSR read at once, those asked for kept
        many = csr_records.pending_of_phones(tx, [csr_phone_id(tx, csr["id"]), *range(10 ** 6, 10 ** 6 + 600)])
    assert [row["id"] for row in many] == [csr["id"]]
    result = phone_config.converge(ca_store, name, settings={"ec_key_size": 384})
    assert result["changed"]
    (row,) = _csr_rows(ca_store, name)
    assert (row["id"], row["status"]) == (csr["id"], "failed")
    assert row["reason"] == "the operator changed the phone's key settings: its EC-256 key is no longer one they ask for"


def test_reissue_of_a_finished_install_fails_the_csr_of_the_previous_one(ca_store, pki, est):
    """The CA holds the CSR of an install that then failed (here: a wrong authentication string in a
    later session); ``reissue`` arms a new install, and the held CSR is failed: the new install starts
    with a new key."""
    use_online_est(ca_store, pki, est)
    name, _identity, _csr = _held(ca_store, est)
    with ca_store.transaction() as tx:
        phone_records.set_operation_result(tx, "test", phone_records.get(tx, name), "failed", "test: it failed")
    assert phone_config.converge(ca_store, name, settings={"certificate_operation": "install_upgrade"},
                                 reissue=True)["changed"]
    (row,) = _csr_rows(ca_store, name)
    assert (row["status"], row["reason"]) == ("failed", "the operator armed the install_upgrade operation again "
                                                        "(reissue)")


def test_offline_certificate_for_a_withdrawn_csr_is_imported_stale(ca_store, pki):
    """The offline CA: the operator declares none while the CSR waits to be exported; the export lists
    it no more, and a certificate the CA's operator signed from an earlier export is imported ``stale``."""
    _offline(ca_store, pki)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    _steps(SessionLeg(ca_store, PhoneIdentity(PhoneSettings(name)), 1, x_caps=XCAPS_ALL), 4)
    (item,) = enrolment.pending_csrs(ca_store)
    signed = pki.sign_request(csr_module.verify(item.request))
    phone_config.converge(ca_store, name, settings={"certificate_operation": "none"})
    assert enrolment.pending_csrs(ca_store) == []
    result = enrolment.import_certificates(ca_store, "operator", [("lsc.pem", pem(signed).encode())])
    assert (result.matched, result.problems) == ([], [])
    assert [device for _source, device, _reason in result.stale] == [name]
    assert [row["status"] for row in certificate_rows(ca_store, name)] == ["stale"]


def test_removed_phone_fails_its_csr_and_an_answer_under_way_lands_nowhere(ca_store, pki, est, monkeypatch):
    """A session sends the phone's CSR to the online CA, and while the CA's answer is on its way the
    operator removes the phone and adds it again: the removal fails the CSR (a ``csr.failed`` event),
    the answer is recorded on neither entry, and the new entry has no CSR and no LSC."""
    use_online_est(ca_store, pki, est)
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    leg = SessionLeg(ca_store, PhoneIdentity(PhoneSettings(name)), 1, x_caps=XCAPS_ALL)
    _steps(leg, 3)
    build = enrolment.online_issuer

    def meanwhile():
        with ca_store.read() as tx:
            (csr,) = [row for row in csr_records.listing(tx, None) if row["device_name"] == name]
        _operate(ca_store, name, REMOVE)
        assert _csr_events(ca_store, name) == [{"csr_id": csr["id"], "via": "capf_phone",
                                                "reason": "the operator removed the phone from the store"}]
        _operate(ca_store, name, ADD)

    monkeypatch.setattr(enrolment, "online_issuer", lambda store, timeout=None: _Late(build(store, timeout), meanwhile))
    _steps(leg, 1)
    assert leg.done and leg.certificate is None
    assert certificate_rows(ca_store, name) == [] and _csr_rows(ca_store, name) == []
    with ca_store.read() as tx:
        assert tx.query("SELECT id FROM certificates WHERE kind = 'lsc'") == []


@pytest.mark.parametrize("where", ["scheduler", "session"])
def test_a_lapsed_operation_fails_the_csr_the_ca_holds_and_its_answer_is_never_recorded(ca_store, pki, est, where):
    """The CA holds the phone's install CSR (the operation waits, ``pending``) and the operation's
    deadline passes: whether the scheduler lapses it or the phone's next session finds it lapsed, the
    CSR is failed with it (a ``csr.failed`` event), no longer polled or listed; when the CA then signs,
    nothing is recorded for the phone, which has no LSC."""
    use_online_est(ca_store, pki, est)
    name, identity, csr = _held(ca_store, est)
    assert phone_row(ca_store, name)["operation_status"] == "pending"
    with ca_store.transaction() as tx:
        change_phone(tx, name, operation_deadline="2026-01-01T00:00:00Z")
    if where == "scheduler":
        assert scheduler.lapse_deadlines(ca_store, utc_now()) == [name]
    else:
        leg = SessionLeg(ca_store, identity, 2, x_caps=XCAPS_ALL)
        _steps(leg, 6)
        assert leg.done and leg.certificate is None
    assert phone_row(ca_store, name)["operation_status"] == "lapsed"
    (row,) = _csr_rows(ca_store, name)
    assert (row["id"], row["status"], row["reason"]) == (csr["id"], "failed", csr_records.LAPSED)
    assert _csr_events(ca_store, name) == [{"csr_id": csr["id"], "reason": csr_records.LAPSED}]
    assert enrolment.pending_csrs(ca_store) == []
    _ca(est, SIGNS, ca_store)
    assert enrolment.poll_pending(ca_store, "enrolment-service") == {"issued": 0, "pending": 0, "failed": 0}
    assert certificate_rows(ca_store, name) == []
    with ca_store.read() as tx:
        (listed,) = reports.phone_rows(tx, {"names": [name]})
    assert listed["lsc"] is None

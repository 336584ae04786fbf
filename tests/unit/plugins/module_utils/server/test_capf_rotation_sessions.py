"""A CAPF certificate rotation, a renewal or a revocation while sessions of a phone are under way: what
the store reports of the phone's LSCs and what the CRLs say of them stays true.

The CAPF certificate is regenerated (a new key) or renewed (an uploaded certificate with the key and
the subject of the active one), an operator revokes the phone's LSCs, and the scheduler signs the CRLs,
at any point of two overlapping sessions of one device: between the phone's connection and its LSC's
issuance (the session is given the CAPF certificate active when the phone connected, as the service
gives it), or between STORE_CERTIFICATE_REQUEST and the phone's answer. The invariants, on both backends:

* every LSC a session issues is signed by the CAPF certificate active when it was issued, not the one
  active when the phone connected: its signature verifies under that certificate, its issuer, AKI and
  CRL distribution point name it, and, once revoked, that certificate's CRL lists it (a rotation made
  because a key was compromised or retired stops that key's signing at once, sessions under way too);
* a revocation is final: an LSC once ``revoked`` stays ``revoked``, with its time and reason, whatever
  the phone answers afterwards;
* every LSC the store recorded chains to a CAPF certificate of the store, and its CRL distribution
  point names the CRL of a CAPF certificate that signed it;
* the newest CRL of each CAPF certificate that keeps one lists exactly the revoked LSCs that
  certificate signed (so the CRL its distribution point names lists a revoked LSC);
* existing-certificate authentication takes an LSC for one exactly when it is neither revoked nor stale;
* the phone's current LSC is never shown as installed when it is revoked.

The sessions are the service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` and the
simulator's ``PhoneSession``, driven an exchange at a time, as in ``test_overlapping_sessions.py``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.capf_validity import renew_capf
from support.protocol import add_phone, openssl_verify, phone_row
from support.sessions import SessionLeg
from support.store_phones import change_phone
from _opencapf import reports, revocation
from _opencapf.ca import authority
from _opencapf.ca import certificates as c
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import x509
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import crls as crl_records
from _opencapf.store import service as service_records

pytestmark = pytest.mark.both_backends

CRL_URL = "http://capf.example.com:8080/capf.crl"
_names = itertools.count(1)


ACTIONS = {
    "regenerate": lambda store, name: authority.regenerate(store, "ec256"),
    "renew": lambda store, name: renew_capf(store),
    "revoke": lambda store, name: revocation.revoke_lsc(store, name, "key_compromise"),
    "sign CRLs": lambda store, name: revocation.refresh_crls(store),
}


def _lscs(store, name: str) -> list[dict]:
    phone = phone_row(store, name)
    with store.read() as tx:
        return tx.query("SELECT * FROM certificates WHERE phone_id = ? AND kind = 'lsc' ORDER BY id", (phone["id"],))


def _revoked(store, name: str) -> dict:
    return {row["serial"]: (row["revoked_at"], row["revocation_reason"])
            for row in _lscs(store, name) if row["status"] == "revoked"}


def _run(store, schedule: list) -> tuple[str, PhoneIdentity, list]:
    """Two sessions of one device, stepped and interleaved with ``ACTIONS`` as ``schedule`` names
    them (then in turn until both end); the revocations seen is checked to only grow on the way.
    Returns the device, its phone, and each LSC a session issued with the CAPF certificate (PEM)
    active when it was issued (the step that issues it makes no rotation)."""
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    legs: list[SessionLeg] = []
    revoked: dict = {}
    issued: list = []
    now = 0.0
    for action in itertools.chain(schedule, itertools.cycle([0, 1])):
        if len(legs) == 2 and all(leg.done for leg in legs):
            break
        if action in ACTIONS:
            ACTIONS[action](store, name)
        else:
            if len(legs) <= action:  # a session begins (its phone connects) at its first step
                legs.append(SessionLeg(store, identity, 100 + len(legs), signer=authority.signer(store)))
                action = len(legs) - 1
            if legs[action].done:
                continue
            now += 0.01
            if legs[action].step(now) == "issued":
                issued.append((legs[action].certificate, authority.current(store)["pem"]))
        seen = _revoked(store, name)
        assert {serial: seen.get(serial) for serial in revoked} == revoked, ("a revocation was undone", action)
        revoked = seen
    return name, identity, issued


def _check_issuers(store, issued: list) -> None:
    """Each LSC of ``issued`` is the work of the CAPF certificate active when it was issued: signed
    with its key, naming it as issuer (subject and AKI) and its CRL as distribution point, and on
    that CRL once revoked (``revocation.refresh_crls`` has run)."""
    with store.read() as tx:
        statuses = {row["serial"]: row["status"] for row in tx.query(
            "SELECT serial, status FROM certificates WHERE kind = 'lsc'")}
        newest = {issuer["fingerprint"]: crl_records.latest(tx, issuer["fingerprint"])
                  for issuer in authority.crl_issuers(store, tx)}
    for lsc, active_pem in issued:
        capf = c.load_pem_certificate(active_pem)
        serial = format(lsc.serial_number, "x")
        assert c.signed_by(lsc, capf) and lsc.issuer == capf.subject, \
            ("not signed by the active CAPF certificate", serial)
        aki = lsc.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki == c.authority_key_identifier(capf), ("its AKI names another CAPF certificate", serial)
        (point,) = lsc.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert point.full_name[0].value == crl_module.issuer_location(CRL_URL, c.fingerprint(capf)), \
            ("its CRL distribution point names another CAPF certificate's CRL", serial)
        if statuses[serial] == "revoked":
            crl = newest[c.fingerprint(capf)]
            assert serial in {entry["serial"] for entry in crl_module.describe(crl["der"])["entries"]}, \
                ("a revoked LSC is not on the CRL of the CAPF certificate that issued it", serial)


def _check(store, name: str, identity: PhoneIdentity) -> None:
    revocation.refresh_crls(store)
    lscs = _lscs(store, name)
    with store.read() as tx:
        capfs = [c.load_pem_certificate(row["pem"]) for row in tx.query("SELECT pem FROM capf_certificates")]
        issuers = authority.crl_issuers(store, tx)
        newest = {issuer["fingerprint"]: crl_records.latest(tx, issuer["fingerprint"]) for issuer in issuers}
        (listed,) = reports.phone_rows(tx, {"names": [name]})
        decider = StoreDecider(store, "test")
        accepted = {row["serial"]: decider._classify(c.load_pem_certificate(row["pem"]), tx)[0] == "lsc"
                    for row in lscs}
    by_location = {crl_module.issuer_location(CRL_URL, c.fingerprint(capf)): capf for capf in capfs}
    on_crl = {fingerprint: {entry["serial"] for entry in crl_module.describe(row["der"])["entries"]}
              for fingerprint, row in newest.items()}
    for row in lscs:
        lsc = c.load_pem_certificate(row["pem"])
        signers = [c.fingerprint(capf) for capf in capfs if lsc.issuer == capf.subject and c.signed_by(lsc, capf)]
        assert signers, ("an LSC chains to no CAPF certificate", row["serial"])
        (point,) = lsc.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        named = by_location[point.full_name[0].value]
        assert c.fingerprint(named) in signers, ("the distribution point names a CRL of another issuer", row["serial"])
        for fingerprint, serials in on_crl.items():
            assert (row["serial"] in serials) == (row["status"] == "revoked" and fingerprint in signers), \
                ("a CRL lists other than the revoked LSCs its CAPF certificate signed", row["serial"], fingerprint)
        assert accepted[row["serial"]] == (row["status"] in ("installed", "issued")), (row["serial"], row["status"])
    if identity.lsc is not None:
        held = format(identity.lsc.serial_number, "x")
        assert {row["serial"]: row["status"] for row in lscs}[held] in ("installed", "revoked")
    if listed["lsc"] and listed["lsc"]["status"] == "installed":
        assert listed["lsc"]["serial"] not in _revoked(store, name)


@pytest.fixture
def crl_store(ca_store):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_url": CRL_URL})
    return ca_store


def test_an_lsc_revoked_before_the_phone_acknowledges_it_stays_revoked(crl_store, tmp_path):
    """The operator revokes the phone's LSCs (a stolen phone) between STORE_CERTIFICATE_REQUEST and the
    phone's answer: the phone's acknowledgement does not make the revoked LSC installed again."""
    # start, AUTH, KEY_GENERATE: the LSC is out; then the revocation, then the phone's answer.
    name, identity, issued = _run(crl_store, [0, 0, 0, "revoke", 0, 0, 0, "sign CRLs"])
    ((lsc, _active),) = issued
    serial = format(lsc.serial_number, "x")
    assert {row["serial"]: row["status"] for row in _lscs(crl_store, name)} == {serial: "revoked"}
    assert openssl_verify(authority.current(crl_store)["pem"], lsc, tmp_path).returncode == 0
    _check(crl_store, name, identity)


def test_a_renewed_capf_certificate_s_crl_lists_the_revoked_lscs_it_signed(crl_store):
    """After an upload of a new certificate for the same key and subject (a CA renewal), an LSC the new
    certificate signed and that is revoked is on the CRL its distribution point names."""
    name, identity, issued = _run(crl_store, ["renew", "renew", 0, 0, 0, 0, 0, 0, 0, "revoke"])
    assert len(issued) == 1
    _check(crl_store, name, identity)


def test_a_delete_leaves_no_lsc_of_the_phone_current_or_unrevoked(crl_store):
    """The phone holds LSC W; a later session's LSC X went out and the phone lost power before storing
    it (X stays ``issued``); then a delete operation empties the phone. No LSC is on the phone: X is not
    its current LSC as ``issued``, and both are revoked (``cessation_of_operation``) and on the CRL."""
    name = f"SEP{next(_names):012X}"
    add_phone(crl_store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    for session_id, operation, behaviour in ((1, None, "completes"), (2, "install_upgrade", "loses power before storing"),
                                             (3, "delete", "completes")):
        if operation is not None:
            with crl_store.transaction() as tx:
                change_phone(tx, name, operation=operation, reissue=True)
        leg = SessionLeg(crl_store, identity, session_id, behaviour)
        while not leg.done:
            leg.step(float(session_id))
    assert identity.lsc is None
    with crl_store.read() as tx:
        (listed,) = reports.phone_rows(tx, {"names": [name]})
    assert listed["lsc"] is None or listed["lsc"]["status"] == "revoked", listed["lsc"]
    lscs = _lscs(crl_store, name)
    assert [(row["status"], row["revocation_reason"]) for row in lscs] == [("revoked", "cessation_of_operation")] * 2
    _check(crl_store, name, identity)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(min_value=0, max_value=1), st.sampled_from(sorted(ACTIONS))), max_size=24))
@example([0, 0, 0, "regenerate", 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, "sign CRLs"])
@example([0, 0, 0, 0, "regenerate", 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, "revoke"])
def test_whatever_rotates_or_is_revoked_mid_session_the_store_and_the_crls_tell_the_truth(crl_store, schedule):
    name, identity, issued = _run(crl_store, schedule)
    _check(crl_store, name, identity)
    _check_issuers(crl_store, issued)


@pytest.mark.parametrize("rotation", ["regenerate", "renew"])
def test_a_session_under_way_signs_with_the_capf_certificate_active_when_it_issues(crl_store, rotation):
    """The phone connected, authenticated and was asked for its key before the CAPF certificate was
    rotated: its LSC comes from the new certificate (the old key signs nothing more), not from the one
    active when the phone connected; revoked, it is on the new certificate's CRL."""
    connected = authority.current(crl_store)["pem"]
    name, identity, issued = _run(crl_store, [0, 0, rotation, 0, 0, 0, 0, "revoke"])
    ((_lsc, active),) = issued
    assert active != connected
    _check(crl_store, name, identity)
    _check_issuers(crl_store, issued)

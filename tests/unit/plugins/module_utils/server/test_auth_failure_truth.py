"""A session whose authentication fails, and a CA that refuses a request, record only what is true of
the phone's operation.

A failed authentication (a wrong or missing string, a certificate refused) counts toward the lock-out
and fails the operation only while it waits for the session that would run it (``pending``): an
install the phone completed stays ``succeeded`` (the phone holds its LSC), and an operation another
session of the phone has in progress stays that session's. Likewise the enrolment service fails an
operation on the online CA's refusal only while it waits for that request (``pending``, its session
deferred). The rule: ``phones.fails_at_authentication`` and ``phones.waits_for_a_session``.

The sessions are the service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` and the
simulator's ``PhoneSession``, driven an exchange at a time; the online CA a loopback EST server."""

from __future__ import annotations

import itertools

import pytest

from support.protocol import add_phone, phone_row
from support.sessions import SessionLeg
from support.third_party_ca import PASSWORD, USERNAME, EnterprisePki, pem
from _opencapf import enrolment, phone_config, phone_query, service_config, trust
from _opencapf.ca import certificates as c
from _opencapf.protocol.constants import XCAP_PENDING_KEY, XCAPS_ALL
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import audit

pytestmark = pytest.mark.both_backends

STRING = "2468"
LOCKOUT = 3
_names = itertools.count(1)


def _name() -> str:
    return f"SEP{next(_names):012X}"


def _session(store, identity: PhoneIdentity, session_id: int, x_caps: int = 0) -> SessionLeg:
    leg = SessionLeg(store, identity, session_id, x_caps=x_caps)
    for step in range(40):
        if leg.done:
            return leg
        leg.step(0.01 * (step + 1))
    raise AssertionError("the session did not end")


def _reported(store, name: str) -> tuple:
    with store.read() as tx:
        view = phone_query.phone_status(tx, name, clock_skew=store.clock_skew)
    return view["operation"], view["operation_status"], view["operation_reason"]


def _by_string(store, name: str) -> PhoneIdentity:
    """A phone whose install_upgrade is declared with the authentication string ``STRING``, and the
    phone set to send it."""
    service_config.converge(store, parameters_wanted={"lockout_failures": LOCKOUT})
    phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                 "authentication_mode": "auth_string"},
                          auth=phone_config.AuthRequest(literal=STRING))
    return PhoneIdentity(PhoneSettings(name, auth_mode="auth_string", auth_string=STRING))


def _sends(identity: PhoneIdentity, sent: str) -> None:
    """The phone's user sets what it sends: a wrong string, or none (null string mode)."""
    settings = identity.settings
    settings.auth_mode, settings.auth_string = ("null_string", "") if sent == "no string" else ("auth_string", "1357")


@pytest.mark.parametrize("sent", ["a wrong string", "no string"])
def test_a_failed_authentication_leaves_a_succeeded_install_succeeded(ca_store, sent):
    """The phone completed its install (it holds its LSC); later sessions send a wrong string or none:
    each counts toward the lock-out, and the phone locks at the limit, but the install is still reported
    ``succeeded`` and its LSC ``installed``."""
    name = _name()
    identity = _by_string(ca_store, name)
    assert _session(ca_store, identity, 1).server.outcome.outcome == "succeeded"
    assert _reported(ca_store, name) == ("install_upgrade", "succeeded", "")
    _sends(identity, sent)
    for attempt in range(1, LOCKOUT + 1):
        leg = _session(ca_store, identity, 1 + attempt)
        assert leg.server.outcome.outcome == "auth_failed"
        assert _reported(ca_store, name) == ("install_upgrade", "succeeded", ""), attempt
        phone = phone_row(ca_store, name)
        assert (phone["auth_failures"], bool(phone["locked"])) == (attempt, attempt == LOCKOUT)
    with ca_store.read() as tx:
        assert len(audit.events(tx, action="phone.auth_failed", subject=name)) == LOCKOUT
        view = phone_query.phone_status(tx, name)
    assert view["lsc"]["status"] == "installed"
    assert view["lsc"]["serial"] == format(identity.lsc.serial_number, "x")


def test_a_wrong_string_fails_the_operation_it_would_run(ca_store):
    """The install waits for its first session (``pending``) and the phone sends a wrong string: the
    operation is ``failed`` with the reason, and the next wrong string leaves it so."""
    name = _name()
    identity = _by_string(ca_store, name)
    _sends(identity, "a wrong string")
    for session_id in (1, 2):
        _session(ca_store, identity, session_id)
        assert _reported(ca_store, name) == ("install_upgrade", "failed", "wrong authentication string")
    assert phone_row(ca_store, name)["auth_failures"] == 2


def test_a_wrong_string_leaves_another_sessions_operation_in_progress(ca_store):
    """A session of the phone has issued its LSC (the operation ``in_progress``) when the phone
    reconnects with a wrong string: the operation stays in progress, that session's, and succeeds when
    the phone stores the LSC."""
    name = _name()
    identity = _by_string(ca_store, name)
    first = SessionLeg(ca_store, identity, 1)
    steps = 1
    while first.step(0.01 * steps) != "issued":
        steps += 1
        assert steps < 20 and not first.done, "the session issued no LSC"
    assert _reported(ca_store, name)[1] == "in_progress"
    stranger = PhoneIdentity(PhoneSettings(name, auth_mode="auth_string", auth_string="1357"))
    assert _session(ca_store, stranger, 2).server.outcome.outcome == "auth_failed"
    assert _reported(ca_store, name)[1] == "in_progress"
    assert phone_row(ca_store, name)["auth_failures"] == 1
    while not first.done:
        steps += 1
        first.step(0.01 * steps)
    assert _reported(ca_store, name) == ("install_upgrade", "succeeded", "")


@pytest.mark.parametrize("mode", ["existing_cert_lsc", "existing_cert_mic"])
def test_a_refused_certificate_fails_only_a_waiting_operation(ca_store, mode):
    """Authentication by an existing certificate, and the phone presents none: an install that
    succeeded stays ``succeeded``; one declared again (``pending``) is ``failed`` with the reason."""
    name = _name()
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    assert _session(ca_store, PhoneIdentity(PhoneSettings(name)), 1).server.outcome.outcome == "succeeded"
    phone_config.converge(ca_store, name, settings={"authentication_mode": mode})
    bare = PhoneIdentity(PhoneSettings(name, auth_mode=mode))  # neither a MIC nor an LSC
    assert _session(ca_store, bare, 2).server.outcome.outcome == "auth_failed"
    assert _reported(ca_store, name) == ("install_upgrade", "succeeded", "")
    phone_config.converge(ca_store, name, settings={"certificate_operation": "install_upgrade"}, reissue=True)
    assert _reported(ca_store, name)[1] == "pending"
    leg = _session(ca_store, bare, 3)
    assert _reported(ca_store, name) == ("install_upgrade", "failed", leg.server.outcome.reason)


# -- the enrolment service --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


def _held(store, pki, est) -> tuple[str, PhoneIdentity]:
    """A phone whose install_upgrade CSR the online CA holds (its session deferred, ``pending``)."""
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "online_ca"},
                            online_ca={"hostname": "localhost", "port": est.port, "type": "est",
                                       "username": USERNAME, "password": PASSWORD})
    name = _name()
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(name))
    est.pending_first = 10 ** 6
    assert _session(store, identity, 1, XCAPS_ALL).server.outcome.outcome == "deferred"
    assert _reported(store, name)[1] == "pending"
    return name, identity


def test_a_refusal_of_the_request_an_operation_waits_for_fails_it(ca_store, pki, est):
    """The CA holds the request of a deferred install, then signs it with a key that is not the
    request's: the enrolment service fails the request and the operation with the refusal."""
    name, _identity = _held(ca_store, pki, est)
    est.pending_first, est.defect = 0, "wrong_key"
    assert enrolment.poll_pending(ca_store, "enrolment-service") == {"issued": 0, "pending": 0, "failed": 1}
    operation, status, reason = _reported(ca_store, name)
    assert (operation, status) == ("install_upgrade", "failed")
    assert reason.startswith("certificate from the online CA refused") and reason.endswith("[wrong_key]"), reason


def test_a_refusal_leaves_the_operation_of_a_session_under_way_to_it(ca_store, pki, est):
    """The CA holds the request of a deferred install; the phone's next session has begun (the
    operation ``in_progress``; the phone kept no key, a power cycle) when the enrolment service hears
    the CA refuse the request: the operation stays that session's, which installs its LSC."""
    name, identity = _held(ca_store, pki, est)
    leg = SessionLeg(ca_store, identity, 2, x_caps=XCAPS_ALL & ~XCAP_PENDING_KEY)
    steps = 0
    while _reported(ca_store, name)[1] != "in_progress":
        steps += 1
        assert steps < 10 and not leg.done, "the session never put the operation in progress"
        leg.step(0.01 * steps)
    est.pending_first, est.defect = 0, "wrong_key"
    assert enrolment.poll_pending(ca_store, "enrolment-service") == {"issued": 0, "pending": 0, "failed": 1}
    assert _reported(ca_store, name)[1] == "in_progress"
    est.defect = None
    while not leg.done:
        steps += 1
        leg.step(0.01 * steps)
    assert leg.server.outcome.outcome == "succeeded", leg.server.outcome
    assert _reported(ca_store, name) == ("install_upgrade", "succeeded", "")
    assert c.fingerprint(identity.lsc) == c.fingerprint(est.issued[-1])

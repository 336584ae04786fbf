"""The LSC a session issues follows the service parameters in force when it is issued.

An operator changes ``validity_days`` or ``crl_url`` (``capf_service``, the one converge path of the
service parameters) while a phone's session is under way, between any two of its exchanges. Invariant, on
both backends: the LSC the session sends is valid for the ``validity_days`` in force when it was issued,
and names as its CRL distribution point the CRL of its signer at the ``crl_url`` in force then (none when
that is empty), as the certificate itself says (the cryptography library; ``openssl x509 -text`` in the
focused test). A change committed after the LSC was signed and before it was recorded is seen too: the LSC
is signed again with the values in force, and nothing of the first attempt is kept.

The session is the service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` and the simulator's
``PhoneSession``, driven an exchange at a time."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone
from support.sessions import SessionLeg
from _opencapf import service_config
from _opencapf.ca import authority, crl, lsc
from _opencapf.ca import certificates as c
from _opencapf.dependencies import ec, x509
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings

pytestmark = pytest.mark.both_backends

BEFORE = {"validity_days": 365, "crl_url": "http://capf.example.com:8080/capf.crl"}
# What the operator sets during the session.
CHANGES = {
    "validity_days": {"validity_days": 90},
    "crl_url": {"crl_url": "http://crl.example.net/lsc.crl"},
    "no crl_url": {"crl_url": ""},
    "both": {"validity_days": 30, "crl_url": "http://crl.example.net/lsc.crl"},
}
_names = itertools.count(1)


def _distribution_point(certificate) -> str | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    ((point,),) = [point.full_name for point in extension]
    return point.value


def _check(store, certificate, in_force: dict) -> None:
    """The LSC carries the values ``in_force``: its validity, and its signer's CRL at ``crl_url``."""
    days = (certificate.not_valid_after_utc - certificate.not_valid_before_utc) / dt.timedelta(days=1)
    assert days == in_force["validity_days"], (days, in_force)
    signer = authority.current(store)["fingerprint"]
    expected = crl.issuer_location(in_force["crl_url"], signer) if in_force["crl_url"] else None
    assert _distribution_point(certificate) == expected, (_distribution_point(certificate), in_force)


def _session(store, change: str, at: int):
    """A session issuing an LSC, the operator's change after ``at`` exchanges; the LSC and the values in
    force when the session issued it."""
    service_config.converge(store, parameters_wanted=dict(BEFORE))
    name = f"SEP{next(_names):012X}"
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    leg = SessionLeg(store, PhoneIdentity(PhoneSettings(name)), 7)
    in_force, issued_with = dict(BEFORE), None
    now, steps = 0.0, 0
    while not leg.done:
        if steps == at:
            service_config.converge(store, parameters_wanted=CHANGES[change])
            in_force.update(CHANGES[change])
        now += 0.01
        steps += 1
        if leg.step(now) == "issued":
            issued_with = dict(in_force)
    assert leg.server.outcome.outcome == "succeeded", leg.server.outcome
    return leg.certificate, issued_with


def test_a_change_between_the_phone_s_connection_and_its_key_applies_to_its_lsc(ca_store, tmp_path):
    """The session read the parameters when the phone named itself; the operator changes both before
    the phone's key comes: the LSC has the new validity and the new CRL distribution point."""
    certificate, in_force = _session(ca_store, "both", 2)
    assert in_force == {"validity_days": 30, "crl_url": "http://crl.example.net/lsc.crl"}
    _check(ca_store, certificate, in_force)
    path = tmp_path / "lsc.pem"
    path.write_text(c.to_pem(certificate))
    text = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-text", "-dates"], check=True,
                          capture_output=True, text=True).stdout
    signer = authority.current(ca_store)["fingerprint"]
    assert f"URI:{crl.issuer_location('http://crl.example.net/lsc.crl', signer)}" in text, text
    assert "capf.example.com" not in text, text
    dates = dict(line.split("=", 1) for line in text.splitlines() if line.startswith(("notBefore=", "notAfter=")))
    parsed = {key: dt.datetime.strptime(value, "%b %d %H:%M:%S %Y %Z") for key, value in dates.items()}
    assert parsed["notAfter"] - parsed["notBefore"] == dt.timedelta(days=30), dates


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(CHANGES)), st.integers(min_value=0, max_value=6))
@example("validity_days", 2)
@example("no crl_url", 2)
def test_the_lsc_follows_the_parameters_in_force_when_it_is_issued(ca_store, change, at):
    certificate, in_force = _session(ca_store, change, at)
    _check(ca_store, certificate, in_force)


def test_a_change_committed_after_the_lsc_was_signed_makes_it_again(ca_store):
    """The caller's parameters (as the service read them when the phone connected) are no longer in force
    when the LSC is recorded: it is signed again with those in force, and only that one is kept."""
    service_config.converge(ca_store, parameters_wanted=dict(BEFORE))
    service_config.converge(ca_store, parameters_wanted=CHANGES["both"])
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issued = lsc.issue(ca_store, "SEP00000000D001", key, source="capf", settings=dict(BEFORE))
    _check(ca_store, issued.certificate, {**BEFORE, **CHANGES["both"]})
    with ca_store.read() as tx:
        rows = tx.query("SELECT c.serial FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE p.name = ?",
                        ("SEP00000000D001",))
        events = tx.query("SELECT details FROM audit_events WHERE action = 'certificate.issued' AND subject = ?",
                          ("SEP00000000D001",))
    assert [row["serial"] for row in rows] == [issued.serial] and len(events) == 1, (rows, events)

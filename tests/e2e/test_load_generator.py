"""The benchmark's load generator (``bench.enrolment``): phones enrolled over real TLS against the
real service, on either event loop, and every enrolment verified: a phone counts only when it holds
an LSC carrying its own key whose signature the CAPF certificate's key verifies.

The tampered cases feed the verification LSCs it must refuse (another key, another signer under the
CAPF certificate's name, another issuer name): each would count as enrolled if the check were
skipped."""

from __future__ import annotations

import datetime as dt
import os
import sys

import pytest

from support.protocol import EVENT_LOOPS, add_phone
from _opencapf.ca import keys
from _opencapf.ca import certificates as c
from _opencapf.dependencies import hashes, x509
from _opencapf.server import event_loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import enrolment  # noqa: E402

PHONES = 12


def _pending(store, count: int, prefix: str) -> list[str]:
    names = [f"SEP{prefix}{index:011X}" for index in range(count)]
    for name in names:
        add_phone(store, name, operation="install_upgrade", key_order="ec")
    return names


def _fleet(server, names, check, loop: str):
    """The load generator's enrolments (``_enrol_all``) on ``loop``; what it counted, and the loop it ran on."""
    target = enrolment.Target(("127.0.0.1",), server.port, cadata=server.capf_pem, timeout=10.0)
    identities = [enrolment._identity(name, keys.generate("ec256")) for name in names]  # pylint: disable=protected-access

    async def run():
        latencies, failures = await enrolment._enrol_all(identities, target, 5, check)  # pylint: disable=protected-access
        return latencies, failures, event_loop.running()

    return event_loop.run(run(), loop)


def _certificate(subject, public_key, issuer_name, signing_key):
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name.from_rfc4514_string(subject) if isinstance(subject, str) else subject
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(signing_key, hashes.SHA256()))


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_the_fleet_enrols_and_verifies_every_phone_on_either_loop(capf_server, ca_store, loop):
    names = _pending(ca_store, PHONES, "A")
    latencies, failures, ran_on = _fleet(capf_server, names, enrolment.LscCheck(capf_server.capf_pem), loop)
    assert (len(latencies), failures, ran_on) == (PHONES, {}, loop)
    with ca_store.read() as tx:
        installed = tx.scalar("SELECT COUNT(*) FROM certificates WHERE kind = 'lsc' AND status = 'installed'")
    assert installed == PHONES


def test_the_benchmark_fleet_runs_on_uvloop_when_installed():
    assert enrolment.fleet_loop() == "uvloop"  # uvloop is pinned in requirements/runtime.txt


def test_lscs_not_signed_by_the_capf_certificate_are_failures(capf_server, ca_store):
    """The real service issues the LSCs; the check is given an impostor CAPF certificate (the same
    name, another key), so every signature check must fail and every phone count as failed."""
    names = _pending(ca_store, PHONES, "B")
    real = c.load_pem_certificate(capf_server.capf_pem)
    impostor_key = keys.generate("rsa2048")
    impostor = _certificate(real.subject, impostor_key.public_key(), real.subject, impostor_key)
    latencies, failures, _loop = _fleet(capf_server, names, enrolment.LscCheck(c.to_pem(impostor)), "uvloop")
    assert latencies == []
    assert failures == {"LSC not signed by the CAPF certificate": PHONES}


@pytest.mark.parametrize("capf_key_type", ["rsa2048", "ec256"])
def test_the_check_refuses_every_tampered_lsc(capf_key_type):
    """One right LSC passes; an LSC with another key, one signed by another key under the CAPF
    certificate's name, and one signed by the CAPF key under another issuer name are each refused."""
    capf_key = keys.generate(capf_key_type)
    capf_name = x509.Name.from_rfc4514_string("CN=CAPF-test,O=Example")
    capf = _certificate(capf_name, capf_key.public_key(), capf_name, capf_key)
    check = enrolment.LscCheck(c.to_pem(capf))
    phone_key, other_key = keys.generate("ec256"), keys.generate("ec256")
    identity = enrolment._identity("SEP0000000000C1", phone_key)  # pylint: disable=protected-access

    def verdict(lsc):
        identity.lsc = lsc
        return check.failure(identity, phone_key)

    assert verdict(None) == "no LSC with the phone's key"
    assert verdict(_certificate("CN=SEP0000000000C1", phone_key.public_key(), capf_name, capf_key)) is None
    assert verdict(_certificate("CN=SEP0000000000C1", other_key.public_key(), capf_name, capf_key)) == \
        "no LSC with the phone's key"
    assert verdict(_certificate("CN=SEP0000000000C1", phone_key.public_key(), capf_name, other_key)) == \
        "LSC not signed by the CAPF certificate"
    assert verdict(_certificate("CN=SEP0000000000C1", phone_key.public_key(),
                                x509.Name.from_rfc4514_string("CN=Other-CA"), capf_key)) == \
        "LSC not signed by the CAPF certificate"

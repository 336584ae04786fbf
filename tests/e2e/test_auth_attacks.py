"""Authentication attacks: brute force of a string, another device's certificate, untrusted or revoked ones.

The brute-force bound is checked twice: 10,000 guesses against the decider (the object the
server's sessions call to authenticate), and concurrent wrong guesses over real TLS.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.phones import phone, run_enrol, target
from support.protocol import add_phone, certificate_rows, phone_row
from support.store_phones import change_phone
from _opencapf import authstrings
from _opencapf.phone_config import AuthRequest, converge as converge_phone
from _opencapf.protocol.session import AuthOffer
from _opencapf.server.decider import StoreDecider, names_device
from _opencapf.simulator.client import enrol
from _opencapf.store import service as service_records

STRING = "4815162342"
GUESSES = 10000
LOCKOUT = 5


@pytest.fixture
def counted_checks(monkeypatch):
    """Counts every comparison of an offered string with a stored hash (what brute force needs; a phone
    without a stored hash compares nothing)."""
    calls = []
    real = authstrings.matches

    def counting(secret, salt, stored, offered):
        if salt and stored:
            calls.append(1)
        return real(secret, salt, stored, offered)

    monkeypatch.setattr(authstrings, "matches", counting)
    return calls


def auth_failed_events(store, name):
    with store.read() as tx:
        return tx.scalar("SELECT count(*) FROM audit_events WHERE action = 'phone.auth_failed' AND subject = ?",
                         (name,))


def session_attempt(store, name, guess) -> tuple[str, str]:
    """One session as the server runs it: begin (refusals), then authenticate."""
    decider = StoreDecider(store, "127.0.0.1:1")
    plan = decider.begin(name)
    if plan.refusal:
        return "refused", plan.refusal
    verdict = decider.authenticate(plan, AuthOffer(name.encode(), guess.encode()))
    return ("ok" if verdict.ok else "failed"), verdict.reason


def test_ten_thousand_guesses_check_at_most_the_lockout_number(ca_store, counted_checks):
    name = "SEP00AB00CD00EF"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": LOCKOUT})
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="auth_string", auth_string=STRING)
    guesses = [f"{number:08d}" for number in range(GUESSES)]
    guesses[GUESSES // 2] = STRING  # the right string, guessed after the lock-out, must not help

    # The worst case for a lock-out check: 100 sessions at a time all pass "is it locked?" before
    # any of them has failed; they then authenticate, from 8 threads like the server's pool.
    outcomes: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, GUESSES, 100):
            deciders = []
            for guess in guesses[start:start + 100]:
                decider = StoreDecider(ca_store, "127.0.0.1:1")
                deciders.append((decider, decider.begin(name), guess))

            def attempt(item):
                decider, plan, guess = item
                if plan.refusal:
                    return "refused"
                return "ok" if decider.authenticate(plan, AuthOffer(name.encode(), guess.encode())).ok else "failed"

            for outcome in pool.map(attempt, deciders):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    assert len(counted_checks) == LOCKOUT, f"{len(counted_checks)} guesses were checked, at most {LOCKOUT} may be"
    # The first wave's 100 sessions were past begin() and fail; every later one is refused at once.
    assert outcomes == {"failed": 100, "refused": GUESSES - 100}
    row = phone_row(ca_store, name)
    assert (row["locked"], row["auth_failures"]) == (1, LOCKOUT)
    assert auth_failed_events(ca_store, name) == LOCKOUT
    assert certificate_rows(ca_store, name) == []

    # The right string is refused (without being checked) until the operator resets the phone.
    assert session_attempt(ca_store, name, STRING)[0] == "refused"
    assert len(counted_checks) == LOCKOUT
    result = converge_phone(ca_store, name, settings={"authentication_mode": "auth_string"},
                            auth=AuthRequest(generate=True, regenerate=True))
    assert result["changed"] and not phone_row(ca_store, name)["locked"]
    assert session_attempt(ca_store, name, STRING)[0] == "failed"  # the old string is gone with the reset
    assert session_attempt(ca_store, name, result["authentication_string"])[0] == "ok"
    assert phone_row(ca_store, name)["auth_failures"] == 0


def test_concurrent_wrong_strings_over_tls_lock_out_at_the_limit(capf_server, ca_store, tmp_path):
    name = "SEP00AB00CD00F0"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 3})
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="auth_string", auth_string=STRING,
              key_order="ec")
    attackers = [phone(tmp_path / f"attacker{index}", name, auth_mode="auth_string", auth_string=f"{index:04d}")
                 for index in range(12)]

    async def all_at_once():
        return await asyncio.gather(*(enrol(identity, target(capf_server), retries=0) for identity in attackers))

    results = asyncio.run(asyncio.wait_for(all_at_once(), 60))
    assert [result.end_reason for result in results] == [7] * 12
    row = phone_row(ca_store, name)
    assert (row["locked"], row["auth_failures"]) == (1, 3)
    assert auth_failed_events(ca_store, name) == 3  # exactly three guesses were ever compared
    rightful = phone(tmp_path / "rightful", name, auth_mode="auth_string", auth_string=STRING)
    assert run_enrol(rightful, capf_server).end_reason == 7
    assert certificate_rows(ca_store, name) == []
    converge_phone(ca_store, name, settings={"authentication_mode": "auth_string"}, auth=AuthRequest(literal="2718"))
    rightful.settings.auth_string = "2718"
    assert run_enrol(rightful, capf_server).outcome == "ok"


# -- certificates --------------------------------------------------------------------------------

def _phone_with_lsc(store, server, tmp_path, name):
    identity = phone(tmp_path, name)
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    assert run_enrol(identity, server).outcome == "ok"
    return identity


@pytest.mark.parametrize("victim", ["SEP00AB00CD00F2", "CSFJSMITH"])
def test_lsc_of_one_device_gets_nothing_for_another(capf_server, ca_store, tmp_path, victim):
    """CSFJSMITH2's LSC must not open CSFJSMITH (its CN contains the name: no substring match)."""
    owner = "SEP00AB00CD00F1" if victim.startswith("SEP") else "CSFJSMITH2"
    own = _phone_with_lsc(ca_store, capf_server, tmp_path, owner)
    add_phone(ca_store, victim, operation="install_upgrade", auth_mode="existing_cert_lsc", key_order="ec")
    impostor = phone(tmp_path / "impostor", victim, auth_mode="existing_cert_lsc")
    impostor.lsc, impostor.lsc_key = own.lsc, own.lsc_key
    result = run_enrol(impostor, capf_server)
    assert (result.outcome, result.end_reason) == ("failed", 7)
    assert "not issued to this device name" in phone_row(ca_store, victim)["operation_reason"]
    assert certificate_rows(ca_store, victim) == []


def test_mic_of_one_device_gets_nothing_for_another(capf_server, ca_store, mic_ca, tmp_path):
    owner = phone(tmp_path, "SEP00AB00CD00F3", mic_ca=mic_ca, auth_mode="existing_cert_mic")
    victim = "SEP00AB00CD00F4"
    add_phone(ca_store, victim, operation="install_upgrade", auth_mode="existing_cert_mic", key_order="ec")
    impostor = phone(tmp_path / "impostor", victim, auth_mode="existing_cert_mic")
    impostor.mic, impostor.mic_key = owner.mic, owner.mic_key
    assert run_enrol(impostor, capf_server).end_reason == 7
    assert "not issued to this device name" in phone_row(ca_store, victim)["operation_reason"]
    assert certificate_rows(ca_store, victim) == []


def test_names_device_is_exact():
    assert names_device("SEP00AB00CD00F1", "sep00ab00cd00f1", "lsc")
    assert names_device("CP-8865-SEP00AB00CD00F1", "SEP00AB00CD00F1", "mic")
    assert not names_device("CP-8865-SEP00AB00CD00F1", "SEP00AB00CD00F1", "lsc")
    assert not names_device("CSFJSMITH2", "CSFJSMITH", "lsc")
    assert not names_device("XSEP00AB00CD00F1", "SEP00AB00CD00F1", "mic")
    assert not names_device("", "SEP00AB00CD00F1", "mic")


def test_lsc_from_an_untrusted_ca_is_refused(capf_server, ca_store, tmp_path):
    """An LSC-looking certificate for the right name, signed by a CA that is neither a CAPF
    certificate nor in CAPF-trust (e.g. another CAPF), does not authenticate."""
    from _opencapf.ca import authority
    from _opencapf.store import open_store
    name = "SEP00AB00CD00F5"
    with open_store(str(tmp_path / "other" / "capf.db"), actor="test") as other:
        authority.ensure(other)
        stranger = _phone_with_lsc_elsewhere(other, tmp_path, name)
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="existing_cert_lsc", key_order="ec")
    result = run_enrol(stranger, capf_server)
    assert result.end_reason == 7
    reason = phone_row(ca_store, name)["operation_reason"]
    assert "neither a valid LSC" in reason and "capf-trust" in reason
    assert certificate_rows(ca_store, name) == []


def _phone_with_lsc_elsewhere(store, tmp_path, name):
    """A phone holding an LSC issued by another CAPF (``store``), without a server."""
    from _opencapf.ca import lsc
    identity = phone(tmp_path / "elsewhere", name, auth_mode="existing_cert_lsc")
    key = identity.key_factory("ec", 256)
    issued = lsc.issue(store, name, key.public_key(), source="capf")
    identity.lsc, identity.lsc_key = issued.certificate, key
    return identity


def test_replaced_lsc_no_longer_authenticates(capf_server, ca_store, tmp_path):
    name = "SEP00AB00CD00F6"
    identity = _phone_with_lsc(ca_store, capf_server, tmp_path, name)
    old = (identity.lsc, identity.lsc_key)
    with ca_store.transaction() as tx:  # upgrade: the new LSC supersedes (revokes) the old one
        change_phone(tx, name, operation="install_upgrade", reissue=True)
    assert run_enrol(identity, capf_server).outcome == "ok"
    with ca_store.transaction() as tx:
        change_phone(tx, name, auth_mode="existing_cert_lsc", reissue=True)
    identity.lsc, identity.lsc_key = old
    identity.mic = None
    identity.settings.auth_mode = "existing_cert_lsc"
    assert run_enrol(identity, capf_server).end_reason == 7
    assert "revoked" in phone_row(ca_store, name)["operation_reason"]


def test_lsc_of_a_deleted_phone_no_longer_authenticates(capf_server, ca_store, tmp_path):
    """Removing the phone from the store (capf_phone state absent) ends its LSC's authority too:
    re-adding the name does not bring the old LSC back."""
    name = "SEP00AB00CD00F7"
    identity = _phone_with_lsc(ca_store, capf_server, tmp_path, name)
    assert converge_phone(ca_store, name, state="absent")["changed"]
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="existing_cert_lsc", key_order="ec")
    identity.mic = None
    identity.settings.auth_mode = "existing_cert_lsc"
    result = run_enrol(identity, capf_server)
    assert result.end_reason == 7, result
    assert certificate_rows(ca_store, name) == []

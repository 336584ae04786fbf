"""Every operation x authentication mode x key type over real TLS on loopback, and the failures.

Every case with an SQLite store; with a PostgreSQL store too, one of each store path: installs (one
with an authentication string, one authenticated by the LSC a first install gave), a delete, a
troubleshoot fetch, the wrong-string lockout, a lapsed deadline, and the stale LSC left by a power
failure (recovery on the next session)."""

from __future__ import annotations

import json

import pytest

from support.protocol import EVENT_LOOPS, add_phone, certificate_rows, openssl_verify, phone_row
from support.phones import phone, run_enrol
from support.store_phones import change_phone
from support.stores import backend_cases
from _opencapf.ca import certificates as c
from _opencapf.phone_config import AuthRequest, converge as converge_phone
from _opencapf.store import service as service_records

AUTH_MODES = ["auth_string", "null_string", "existing_cert_lsc", "existing_cert_mic"]
KEY_ORDERS = {"rsa": "rsa2048", "ec": "ec256", "ec_preferred": "ec256"}
STRING = "4815162342"


def _every_mode(key_orders, on_postgresql):
    """Every authentication mode x ``key_orders`` on SQLite, the ``on_postgresql`` pairs on PostgreSQL too."""
    return backend_cases([(auth_mode, key_order) for auth_mode in AUTH_MODES for key_order in key_orders], on_postgresql)


def set_phone(store, name, **changes):
    """Change settings as an administrator does: the operation given is pending work, a finished one
    armed again (reissued)."""
    with store.transaction() as tx:
        change_phone(tx, name, reissue="operation" in changes, **changes)


def last_session(store, name):
    with store.read() as tx:
        row = tx.one("SELECT * FROM sessions WHERE device_name = ? ORDER BY id DESC LIMIT 1", (name,))
        event = tx.one("SELECT details FROM audit_events WHERE action LIKE 'session.%' AND subject = ? "
                       "ORDER BY id DESC LIMIT 1", (name,))
    return row, json.loads(event["details"])


def prepared_phone(store, server, tmp_path, mic_ca, name, auth_mode, key_order="ec", with_lsc=None):
    """A phone in the store and on disk, ready for ``auth_mode``; with an installed LSC when asked
    (always for existing_cert_lsc), obtained over the protocol with the null string."""
    identity = phone(tmp_path, name, mic_ca=mic_ca, auth_mode=auth_mode,
                     auth_string=STRING if auth_mode == "auth_string" else "")
    add_phone(store, name, operation="none", auth_mode="null_string", key_order=key_order)
    if with_lsc or (with_lsc is None and auth_mode == "existing_cert_lsc"):
        set_phone(store, name, operation="install_upgrade")
        identity.settings.auth_mode = "null_string"
        assert run_enrol(identity, server).outcome == "ok"
        identity.settings.auth_mode = auth_mode
        identity.save()
    converge_phone(store, name, settings={"authentication_mode": auth_mode},
                   auth=AuthRequest(literal=STRING if auth_mode == "auth_string" else None))
    return identity


@pytest.mark.parametrize("backend, auth_mode, key_order", _every_mode(sorted(KEY_ORDERS), [
    ("auth_string", "ec"), ("existing_cert_lsc", "ec_preferred")]),
    indirect=["backend"])
def test_install_upgrade(capf_server, ca_store, mic_ca, tmp_path, auth_mode, key_order):
    name = "SEP00AA00BB00CC"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, auth_mode, key_order)
    before = {row["id"] for row in certificate_rows(ca_store, name)}
    set_phone(ca_store, name, operation="install_upgrade", key_order=key_order)
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason, result.key) == ("ok", 1, KEY_ORDERS[key_order])
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "succeeded"
    lscs = certificate_rows(ca_store, name)
    installed = [lsc for lsc in lscs if lsc["status"] == "installed"]
    assert len(installed) == 1 and installed[0]["id"] not in before
    assert installed[0]["fingerprint"] == c.fingerprint(identity.lsc)
    assert all(lsc["status"] == "revoked" for lsc in lscs if lsc["id"] in before)  # upgrade supersedes
    assert openssl_verify(capf_server.capf_pem, installed[0]["pem"], tmp_path).returncode == 0
    session, details = last_session(ca_store, name)
    assert session["outcome"] == "succeeded" and session["peer"].startswith("127.0.0.1:")
    assert details["operation"] == "install_upgrade" and details["duration_ms"] >= 0
    if auth_mode.startswith("existing_cert"):
        assert details["presented"] == ("lsc" if auth_mode == "existing_cert_lsc" else "mic")


@pytest.mark.parametrize("backend, auth_mode, key_order", _every_mode(("rsa", "ec"), [("existing_cert_lsc", "rsa")]),
                         indirect=["backend"])
def test_delete(capf_server, ca_store, mic_ca, tmp_path, auth_mode, key_order):
    name = "SEP00AA00BB00CD"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, auth_mode, key_order, with_lsc=True)
    old = identity.lsc
    set_phone(ca_store, name, operation="delete")
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason, result.operation) == ("ok", 1, "delete")
    assert identity.lsc is None and identity.mic is not None  # the MIC is never touched
    (row,) = [r for r in certificate_rows(ca_store, name) if r["fingerprint"] == c.fingerprint(old)]
    assert row["status"] == "revoked"
    assert phone_row(ca_store, name)["operation_status"] == "succeeded"


@pytest.mark.parametrize("backend, auth_mode, key_order", _every_mode(("rsa", "ec"), [("existing_cert_mic", "ec")]),
                         indirect=["backend"])
def test_troubleshoot_retrieves_lsc_and_mic(capf_server, ca_store, mic_ca, tmp_path, auth_mode, key_order):
    name = "SEP00AA00BB00CE"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, auth_mode, key_order, with_lsc=True)
    set_phone(ca_store, name, operation="troubleshoot")
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason, result.fetched) == ("no_operation", 0, 2)
    retrieved = {row["kind"]: row for kind in ("retrieved_lsc", "retrieved_mic")
                 for row in certificate_rows(ca_store, name, kind)}
    assert retrieved["retrieved_lsc"]["fingerprint"] == c.fingerprint(identity.lsc)
    assert retrieved["retrieved_mic"]["fingerprint"] == c.fingerprint(identity.mic)
    assert {(row["source"], row["status"], row["installed_at"]) for row in retrieved.values()} == {
        ("troubleshoot", "retrieved", None)}
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "succeeded"


@pytest.mark.parametrize("capf_server", EVENT_LOOPS, indirect=True)
@pytest.mark.parametrize("auth_mode, key_order", [("auth_string", "rsa")])
def test_install_troubleshoot_and_delete_on_each_event_loop(capf_server, ca_store, mic_ca, tmp_path, auth_mode,
                                                            key_order):
    """The same service on asyncio and on uvloop: an install, a troubleshoot fetch and a delete, each ending
    as the protocol says, on record, and the LSC verified by openssl."""
    name = "SEP00AA00BB00DA"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, auth_mode, key_order)
    set_phone(ca_store, name, operation="install_upgrade", key_order=key_order)
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason, result.key) == ("ok", 1, KEY_ORDERS[key_order])
    (installed,) = [row for row in certificate_rows(ca_store, name) if row["status"] == "installed"]
    assert installed["fingerprint"] == c.fingerprint(identity.lsc)
    assert openssl_verify(capf_server.capf_pem, installed["pem"], tmp_path).returncode == 0
    set_phone(ca_store, name, operation="troubleshoot")
    assert (run_enrol(identity, capf_server).fetched, phone_row(ca_store, name)["operation_status"]) == (2, "succeeded")
    set_phone(ca_store, name, operation="delete")
    assert (run_enrol(identity, capf_server).operation, identity.lsc) == ("delete", None)
    assert {row["status"] for row in certificate_rows(ca_store, name)} == {"revoked"}
    with ca_store.read() as tx:
        outcomes = [row["outcome"] for row in tx.query("SELECT outcome FROM sessions WHERE device_name = ? ORDER BY id",
                                                       (name,))]
    assert outcomes[-3:] == ["succeeded"] * 3, outcomes


@pytest.mark.parametrize("auth_mode", AUTH_MODES)
def test_no_pending_operation(capf_server, ca_store, mic_ca, tmp_path, auth_mode):
    name = "SEP00AA00BB00CF"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, auth_mode)
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason) == ("no_operation", 0)
    assert last_session(ca_store, name)[0]["outcome"] == "no_operation"


def test_ec_preferred_falls_back_to_rsa(capf_server, ca_store, tmp_path):
    from _opencapf.protocol.phone import PhoneBehaviour
    identity = phone(tmp_path, "SEP00AA00BB00D0")
    add_phone(ca_store, "SEP00AA00BB00D0", operation="install_upgrade", key_order="ec_preferred", rsa_key_size=1024)
    result = run_enrol(identity, capf_server, behaviour=PhoneBehaviour(ec_capable=False))
    assert (result.outcome, result.key) == ("ok", "rsa1024")


# -- failure paths ---------------------------------------------------------------------------

@pytest.mark.both_backends
def test_wrong_string_counts_and_locks_out(capf_server, ca_store, tmp_path):
    name = "SEP00AA00BB00D1"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 2})
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="auth_string", auth_string=STRING,
              key_order="ec")
    identity = phone(tmp_path, name, auth_mode="auth_string", auth_string="0000")
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.end_reason) == ("failed", 7)
    row = phone_row(ca_store, name)
    assert (row["auth_failures"], row["locked"], row["operation_status"]) == (1, 0, "failed")
    assert "wrong authentication string" in row["operation_reason"]
    assert run_enrol(identity, capf_server).end_reason == 7
    row = phone_row(ca_store, name)
    assert (row["auth_failures"], row["locked"]) == (2, 1)
    identity.settings.auth_string = STRING  # the right string no longer helps: locked phones are refused
    assert run_enrol(identity, capf_server).end_reason == 7
    session, _details = last_session(ca_store, name)
    assert session["outcome"] == "refused" and "locked out" in session["reason"]
    assert phone_row(ca_store, name)["auth_failures"] == 2
    assert certificate_rows(ca_store, name) == []


def test_right_string_after_a_wrong_one_resets_the_count(capf_server, ca_store, tmp_path):
    name = "SEP00AA00BB00D2"
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="auth_string", auth_string=STRING,
              key_order="ec")
    identity = phone(tmp_path, name, auth_mode="auth_string", auth_string="1111")
    assert run_enrol(identity, capf_server).end_reason == 7
    identity.settings.auth_string = STRING
    assert run_enrol(identity, capf_server).outcome == "ok"
    assert phone_row(ca_store, name)["auth_failures"] == 0


@pytest.mark.parametrize("auth_mode", ["existing_cert_lsc", "existing_cert_mic"])
def test_no_certificate_on_the_phone(capf_server, ca_store, tmp_path, auth_mode):
    name = "SEP00AA00BB00D3"
    add_phone(ca_store, name, operation="install_upgrade", auth_mode=auth_mode, key_order="ec")
    result = run_enrol(phone(tmp_path, name, auth_mode=auth_mode), capf_server)
    assert (result.outcome, result.end_reason) == ("failed", 7)
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "failed" and "presented none" in row["operation_reason"]


def test_untrusted_mic_is_refused(capf_server, ca_store, tmp_path):
    from _opencapf.simulator.manufacturing import ManufacturingCa
    stranger = ManufacturingCa.create(str(tmp_path / "other-ca"))  # not in CAPF-trust
    name = "SEP00AA00BB00D4"
    add_phone(ca_store, name, operation="install_upgrade", auth_mode="existing_cert_mic", key_order="ec")
    result = run_enrol(phone(tmp_path, name, mic_ca=stranger, auth_mode="existing_cert_mic"), capf_server)
    assert result.end_reason == 7
    assert "capf-trust" in phone_row(ca_store, name)["operation_reason"]


def test_unknown_device(capf_server, ca_store, tmp_path):
    result = run_enrol(phone(tmp_path, "SEP0000DEADBEEF"), capf_server)
    assert (result.outcome, result.end_reason) == ("unknown_device", 9)
    session, details = last_session(ca_store, "SEP0000DEADBEEF")
    assert session["outcome"] == "unknown_device"


def test_lookup_is_case_insensitive(capf_server, ca_store, tmp_path):
    add_phone(ca_store, "SEP00AA00BB00D5", operation="install_upgrade", key_order="ec")
    result = run_enrol(phone(tmp_path, "sep00aa00bb00d5"), capf_server)
    assert result.outcome == "ok"
    assert certificate_rows(ca_store, "SEP00AA00BB00D5")[0]["status"] == "installed"


@pytest.mark.both_backends
def test_lapsed_deadline_is_refused_and_marked(capf_server, ca_store, tmp_path):
    name = "SEP00AA00BB00D6"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec", operation_deadline="2020-01-01T00:00:00Z")
    result = run_enrol(phone(tmp_path, name), capf_server)
    assert (result.outcome, result.end_reason) == ("failed", 7)
    row = phone_row(ca_store, name)
    assert (row["operation_status"], row["operation_reason"]) == ("lapsed", "deadline passed")
    assert certificate_rows(ca_store, name) == []


def test_deleted_lsc_no_longer_authenticates(capf_server, ca_store, mic_ca, tmp_path):
    name = "SEP00AA00BB00D7"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, "existing_cert_lsc")
    kept = (identity.lsc, identity.lsc_key)
    set_phone(ca_store, name, operation="delete")
    assert run_enrol(identity, capf_server).outcome == "ok"
    identity.lsc, identity.lsc_key = kept  # a copy of the deleted LSC is presented again
    identity.mic = None
    set_phone(ca_store, name, operation="install_upgrade")
    result = run_enrol(identity, capf_server)
    assert result.end_reason == 7
    assert "revoked" in phone_row(ca_store, name)["operation_reason"]


def test_lsc_of_a_previous_capf_certificate_still_authenticates(capf_server, ca_store, mic_ca, tmp_path):
    from _opencapf.ca import authority
    name = "SEP00AA00BB00D8"
    identity = prepared_phone(ca_store, capf_server, tmp_path, mic_ca, name, "existing_cert_lsc")
    identity.mic = None
    authority.regenerate(ca_store, "ec256")
    set_phone(ca_store, name, operation="install_upgrade")
    # The server presents the new CAPF certificate without a restart; the old LSC still authenticates.
    result = run_enrol(identity, capf_server, target_options={"cadata": authority.current(ca_store)["pem"]})
    assert result.outcome == "ok"
    new = [row for row in certificate_rows(ca_store, name) if row["status"] == "installed"][0]
    assert openssl_verify(authority.current(ca_store)["pem"], new["pem"], tmp_path).returncode == 0


@pytest.mark.both_backends
def test_stale_lsc_after_power_failure_and_delete_all(capf_server, ca_store, store_cli, tmp_path):
    from support.tools import run_cli
    from _opencapf.protocol.phone import PhoneBehaviour
    name = "SEP00AA00BB00D9"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, name, auth_mode="null_string")
    lost = run_enrol(identity, capf_server, behaviour=PhoneBehaviour(power_failure_at="store"))
    assert lost.outcome == "power_failure"
    (first,) = certificate_rows(ca_store, name)
    assert first["status"] == "issued"  # signed, never acknowledged
    csrs = json.loads(run_cli(*store_cli, "--json", "csr", "list", "--all", check=True).stdout)
    assert [row["status"] for row in csrs if row["device_name"] == name] == ["issued"]
    assert run_enrol(identity, capf_server).outcome == "ok"
    statuses = [row["status"] for row in certificate_rows(ca_store, name)]
    assert statuses == ["stale", "installed"]
    listed = json.loads(run_cli(*store_cli, "--json", "stale-lsc", "list", check=True).stdout)
    assert [row["serial"] for row in listed] == [first["serial"]]
    deleted = json.loads(run_cli(*store_cli, "--json", "stale-lsc", "delete", "all",
                                 check=True).stdout)
    assert deleted == {"deleted": 1}
    assert [row["status"] for row in certificate_rows(ca_store, name)] == ["installed"]


def test_auth_mode_survives_power_failure_and_is_cleared_on_completion(capf_server, ca_store, tmp_path):
    from _opencapf.protocol.phone import PhoneBehaviour
    from _opencapf.simulator.identity import PhoneIdentity
    name = "SEP00AA00BB00DA"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec", auth_mode="auth_string",
              auth_string=STRING)
    identity = phone(tmp_path, name, auth_mode="auth_string", auth_string=STRING)
    assert run_enrol(identity, capf_server, behaviour=PhoneBehaviour(power_failure_at="key")).outcome == "power_failure"
    rebooted = PhoneIdentity.load(identity.directory)
    assert rebooted.settings.flash_auth_mode == "auth_string"
    rebooted.settings.auth_mode = "null_string"  # configuration changed meanwhile; the flash value wins
    result = run_enrol(rebooted, capf_server)
    assert result.outcome == "ok"
    assert PhoneIdentity.load(identity.directory).settings.flash_auth_mode == ""


def test_communication_failure_is_retried(ca_store, tmp_path):
    import asyncio
    import socket
    from _opencapf.simulator.client import Target, enrol
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    identity = phone(tmp_path, "SEP00AA00BB00DB")
    result = asyncio.run(enrol(identity, Target(("127.0.0.1",), port, timeout=2), retries=3, retry_interval=0.01))
    assert (result.outcome, result.attempts) == ("communication_failure", 4)
    assert result.tried == ["127.0.0.1"] * 4


def test_secure_phone_cannot_use_auth_string(tmp_path, capf_server):
    identity = phone(tmp_path, "SEP00AA00BB00DC", auth_mode="auth_string", auth_string=STRING,
                     security_mode="encrypted")
    result = run_enrol(identity, capf_server)
    assert result.outcome == "not_contacted" and "cannot use authentication-string" in result.detail
    assert identity.settings.registered is False


def test_secure_phone_registers_only_after_its_lsc(capf_server, ca_store, tmp_path):
    name = "SEP00AA00BB00DD"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec", security_mode="authenticated")
    identity = phone(tmp_path, name, security_mode="authenticated")
    assert identity.settings.registered is False
    assert run_enrol(identity, capf_server).outcome == "ok"
    assert identity.settings.registered is True


def test_non_secure_phone_registers_then_contacts_capf(capf_server, ca_store, tmp_path):
    name = "SEP00AA00BB00DE"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, name)
    result = run_enrol(identity, capf_server, string_entered=False)
    assert result.outcome == "ok" and identity.settings.registered is True
    waiting = phone(tmp_path, "SEP00AA00BB00DF", auth_mode="auth_string", auth_string=STRING)
    assert run_enrol(waiting, capf_server, string_entered=False).outcome == "not_contacted"


@pytest.mark.parametrize("key_order, size, expected", [
    ("rsa", 1024, "rsa1024"), ("rsa", 3072, "rsa3072"), ("rsa", 4096, "rsa4096"),
    ("ec", 384, "ec384"), ("ec", 521, "ec521"),
])
def test_every_key_size(capf_server, ca_store, tmp_path, key_order, size, expected):
    name = "SEP00AA00BB00E0"
    sizes = {"rsa_key_size": size} if key_order == "rsa" else {"ec_key_size": size}
    add_phone(ca_store, name, operation="install_upgrade", key_order=key_order, **sizes)
    identity = phone(tmp_path, name)
    result = run_enrol(identity, capf_server)
    assert (result.outcome, result.key) == ("ok", expected)
    (lsc,) = certificate_rows(ca_store, name)
    assert lsc["status"] == "installed"
    assert openssl_verify(capf_server.capf_pem, lsc["pem"], tmp_path).returncode == 0

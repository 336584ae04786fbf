"""Online CA (EST, AD CS) and Offline CA over the real protocol: simulator phones with X-CSR/1, the
CAPF service on loopback TLS, loopback HTTPS CAs, certificates checked with the openssl CLI.

Every case with an SQLite store; with a PostgreSQL store too, one of each store path: EST issue and
renewal (RSA), AD CS pending then issued, an online failure (denied) and the enrolment
service of a ``serve`` process. The offline CA's import on PostgreSQL: test_third_party_acceptance.py."""

from __future__ import annotations

import json
import os
import socket

import pytest
from cryptography import x509

from support.phones import phone, run_enrol
from support.ansible_runner import changed_tasks, install_collection, playbook
from support.protocol import add_phone, certificate_rows, phone_row
from support.third_party_ca import PASSWORD, USERNAME, AdcsServer, EnterprisePki, EstServer, key_pem, pem
from support.serving import Serving, wait_for
from support.store_phones import change_phone
from support.stores import backend_cases
from support.tools import ROOT, openssl, run_cli
from _opencapf import enrolment, service_config, trust
from _opencapf.ca import authority
from _opencapf.ca import certificates as c
from _opencapf.protocol.constants import XCAP_SIGN_RSA, XCAPS_ALL
from _opencapf.protocol.phone import PhoneBehaviour

X_CSR = PhoneBehaviour(x_caps=XCAPS_ALL)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


@pytest.fixture(scope="module")
def other_pki():
    return EnterprisePki("Unrelated")


def trust_pki(store, pki):
    """Upload the CA root and issuing CA to CAPF-trust and CallManager-trust (task flow step 1)."""
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust", "callmanager-trust"])


def configure(store, ca_type, port, *, hostname="localhost", password=PASSWORD, **extra):
    settings = {"hostname": hostname, "port": port, "type": ca_type, "username": USERNAME, "password": password}
    if ca_type == "microsoft":
        settings["template"] = "PhoneLSC"
    settings.update(extra)
    service_config.converge(store, parameters_wanted={"issuer": "online_ca"}, online_ca=settings)


def enrolling_phone(store, tmp_path, name, key_order="rsa"):
    identity = phone(tmp_path, name)
    add_phone(store, name, operation="install_upgrade", auth_mode="null_string", key_order=key_order)
    return identity


def verify_with_ca(pki, certificate_pem, tmp_path):
    """openssl verify against the test CA (root trusted, issuing CA untrusted) and against CAPF."""
    (tmp_path / "root.pem").write_text(pem(pki.root))
    (tmp_path / "issuing.pem").write_text(pem(pki.issuing))
    (tmp_path / "lsc.pem").write_text(certificate_pem)
    return openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "issuing.pem"),
                   str(tmp_path / "lsc.pem"), check=False)


def assert_third_party_lsc(store, server, pki, identity, name, tmp_path, source):
    rows = certificate_rows(store, name)
    installed = [row for row in rows if row["status"] == "installed"]
    assert len(installed) == 1
    row = installed[0]
    assert row["source"] == source and row["issuer"] == pki.issuing.subject.rfc4514_string()
    assert row["fingerprint"] == c.fingerprint(identity.lsc)
    assert identity.lsc.issuer == pki.issuing.subject  # signed by the test CA, not by CAPF
    assert verify_with_ca(pki, row["pem"], tmp_path).returncode == 0
    (tmp_path / "capf.pem").write_text(server.capf_pem)
    assert openssl("verify", "-CAfile", str(tmp_path / "capf.pem"), str(tmp_path / "lsc.pem"),
                   check=False).returncode != 0
    assert phone_row(store, name)["operation_status"] == "succeeded"


@pytest.mark.parametrize("backend, key_order", backend_cases(["rsa", "ec"], ["rsa"]), indirect=["backend"])
def test_online_est_enrolment(capf_server, ca_store, pki, tmp_path, key_order):
    with EstServer(pki, str(tmp_path / "est")) as est:
        trust_pki(ca_store, pki)
        configure(ca_store, "est", est.port, profile_label="phones")
        identity = enrolling_phone(ca_store, tmp_path, "SEP0A0B0C0D0E01", key_order)
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
        assert [operation for operation, _label, _auth in est.log] == ["simpleenroll"]
        assert est.log[0][1] == "phones"
        assert_third_party_lsc(ca_store, capf_server, pki, identity, "SEP0A0B0C0D0E01", tmp_path, "online_ca")
        first = identity.lsc
        set_operation(ca_store, "SEP0A0B0C0D0E01")  # upgrade: the CA renews
        assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "ok"
        assert [operation for operation, _label, _auth in est.log] == ["simpleenroll", "simplereenroll"]
    assert identity.lsc.serial_number != first.serial_number
    assert [row["status"] for row in certificate_rows(ca_store, "SEP0A0B0C0D0E01")] == ["revoked", "installed"]
    with ca_store.read() as tx:
        csr = tx.one("SELECT status, csr_pem FROM csrs ORDER BY id DESC LIMIT 1")
    assert csr["status"] == "issued" and "BEGIN CERTIFICATE REQUEST" in csr["csr_pem"]


@pytest.mark.parametrize("language", ["en", "de"])
def test_online_microsoft_enrolment(capf_server, ca_store, pki, tmp_path, language):
    with AdcsServer(pki, str(tmp_path / "adcs"), language=language) as adcs:
        trust_pki(ca_store, pki)
        configure(ca_store, "microsoft", adcs.port)
        identity = enrolling_phone(ca_store, tmp_path, "SEP0A0B0C0D0E02")
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
        assert adcs.forms[0]["CertAttrib"][0].strip() == "CertificateTemplate:PhoneLSC"
    assert_third_party_lsc(ca_store, capf_server, pki, identity, "SEP0A0B0C0D0E02", tmp_path, "online_ca")


@pytest.mark.both_backends
def test_microsoft_pending_then_issued_on_the_next_session(capf_server, ca_store, pki, tmp_path):
    name = "SEP0A0B0C0D0E03"
    with AdcsServer(pki, str(tmp_path / "adcs"), mode="pending") as adcs:
        trust_pki(ca_store, pki)
        configure(ca_store, "microsoft", adcs.port)
        identity = enrolling_phone(ca_store, tmp_path, name)
        first = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert first.outcome == "retry_later" and first.retry_delay > 0, first
        row = phone_row(ca_store, name)
        assert row["operation_status"] == "pending" and "pending" in row["operation_reason"]
        with ca_store.read() as tx:
            assert tx.one("SELECT status, external_ref FROM csrs")["status"] == "pending"
        # Not yet approved: the phone hears "later" again and keeps its pending key.
        again = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert again.outcome == "retry_later", again
        adcs.issue(41)  # the CA manager approves the request
        # The enrolment service's pass picks it up (the next session would, too).
        assert enrolment.worker_step(ca_store) == {"issued": 1, "pending": 0, "failed": 0}
        second = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (second.outcome, second.end_reason, second.key) == ("ok", 1, ""), second  # no new key generated
    assert_third_party_lsc(ca_store, capf_server, pki, identity, name, tmp_path, "online_ca")


def test_est_202_retry_after_then_issued_within_the_session(capf_server, ca_store, pki, tmp_path):
    with EstServer(pki, str(tmp_path / "est")) as est:
        est.pending_first, est.retry_after = 1, 1
        trust_pki(ca_store, pki)
        configure(ca_store, "est", est.port)
        identity = enrolling_phone(ca_store, tmp_path, "SEP0A0B0C0D0E04")
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
        assert len(est.log) == 2
    assert_third_party_lsc(ca_store, capf_server, pki, identity, "SEP0A0B0C0D0E04", tmp_path, "online_ca")


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAILURES = {
    # name: (server options, server attributes, configure overrides, expected words in the reason)
    "unreachable": ({}, {}, {"port": "closed"}, "unreachable"),
    "hostname_mismatch": ({"names": ("ca.wrong.example",), "addresses": ()}, {}, {}, "tls_hostname_mismatch"),
    "ca_not_in_capf_trust": ({}, {}, {"trust": "other"}, "tls_untrusted"),
    "wrong_password": ({}, {}, {"password": "not-the-password"}, "authentication_failed"),
    "denied": ({}, {"deny": True}, {}, "denied"),
    "malformed": ({}, {"malformed": True}, {}, "malformed_response"),
    "no_key_usage": ({}, {"key_usage": False}, {}, "key_usage"),
}


@pytest.mark.parametrize("backend, case", backend_cases(sorted(FAILURES), ["denied"]),
                         indirect=["backend"])
def test_online_failures_give_a_recorded_reason(capf_server, ca_store, pki, other_pki, tmp_path, case):
    options, attributes, overrides, expected = FAILURES[case]
    name = "SEP0A0B0C0D0E05"
    with EstServer(pki, str(tmp_path / "est"), **options) as est:
        for key, value in attributes.items():
            setattr(est, key, value)
        trust_pki(ca_store, other_pki if overrides.get("trust") == "other" else pki)
        port = _closed_port() if overrides.get("port") == "closed" else est.port
        configure(ca_store, "est", port, password=overrides.get("password", PASSWORD))
        identity = enrolling_phone(ca_store, tmp_path, name)
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason) == ("failed", 7), result
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "failed"
    assert expected in row["operation_reason"], row["operation_reason"]
    assert "not-the-password" not in row["operation_reason"]
    with ca_store.read() as tx:
        csr = tx.one("SELECT status, reason FROM csrs")
    assert csr["status"] == "failed" and expected in csr["reason"]
    assert identity.lsc is None
    assert not [row for row in certificate_rows(ca_store, name) if row["status"] == "installed"]


def test_ec_key_with_a_ca_path_that_cannot_take_it(capf_server, ca_store, pki, tmp_path):
    name = "SEP0A0B0C0D0E06"
    with AdcsServer(pki, str(tmp_path / "adcs")) as adcs:  # AD CS path: RSA only by default
        trust_pki(ca_store, pki)
        configure(ca_store, "microsoft", adcs.port)
        identity = enrolling_phone(ca_store, tmp_path, name, key_order="ec")
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert adcs.forms == []  # nothing was sent to the CA
    assert (result.outcome, result.end_reason) == ("failed", 7)
    reason = phone_row(ca_store, name)["operation_reason"]
    assert "unsupported_key" in reason and "RSA keys only" in reason


def test_phone_without_x_csr_gets_a_clear_reason(capf_server, ca_store, pki, tmp_path):
    name = "SEP0A0B0C0D0E07"
    trust_pki(ca_store, pki)
    configure(ca_store, "est", _closed_port())
    identity = enrolling_phone(ca_store, tmp_path, name)
    result = run_enrol(identity, capf_server)  # real phones never advertise X_CAPS
    assert (result.outcome, result.end_reason) == ("failed", 7)
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "failed" and "X-CSR/1" in row["operation_reason"]
    # A phone that signs only RSA CSRs cannot be asked for an EC key.
    set_operation(ca_store, name, key_order="ec")
    result = run_enrol(identity, capf_server, behaviour=PhoneBehaviour(x_caps=XCAP_SIGN_RSA))
    assert result.end_reason == 7 and "EC key" in phone_row(ca_store, name)["operation_reason"]


def set_operation(store, name, **changes):
    with store.transaction() as tx:
        change_phone(tx, name, operation="install_upgrade", reissue=True, **changes)


# -- offline CA ------------------------------------------------------------------------------------

def openssl_sign(pki, csr_path, out_path, tmp_path):
    """The CA operator signs a CSR with the openssl command line (copying the requested extensions)."""
    (tmp_path / "issuing.pem").write_text(pem(pki.issuing))
    (tmp_path / "issuing.key").write_bytes(key_pem(pki.issuing_key))
    openssl("x509", "-req", "-in", str(csr_path), "-CA", str(tmp_path / "issuing.pem"), "-CAkey",
            str(tmp_path / "issuing.key"), "-CAcreateserial", "-days", "365", "-sha256", "-copy_extensions",
            "copyall", "-out", str(out_path))


def test_offline_round_trip_with_a_stale_certificate(capf_server, ca_store, store_cli, pki, tmp_path):
    names = ["SEP0A0B0C0D0E10", "SEP0A0B0C0D0E11"]
    trust_pki(ca_store, pki)
    service_config.converge(ca_store, parameters_wanted={"issuer": "offline_ca"})
    identities = {name: enrolling_phone(ca_store, tmp_path, name) for name in names}
    for name in names:
        result = run_enrol(identities[name], capf_server, behaviour=X_CSR)
        assert result.outcome == "retry_later" and result.key == "rsa2048", result
    listed = run_cli(*store_cli, "--json", "csr", "list", check=True)
    assert all(name in listed.stdout for name in names)
    exported = tmp_path / "export-1"
    exported.mkdir()
    run_cli(*store_cli, "csr", "export", "--directory", str(exported), check=True)
    assert sorted(p.name for p in exported.iterdir()) == [f"{name}.csr.pem" for name in names]
    signed = {}
    for name in names:
        signed[name] = tmp_path / f"{name}.cer"
        openssl_sign(pki, exported / f"{name}.csr.pem", signed[name], tmp_path)
    # The second phone resets (it loses its pending key) before its certificate comes back.
    reset_name = names[1]
    identities[reset_name] = phone(tmp_path / "reset", reset_name)
    assert run_enrol(identities[reset_name], capf_server, behaviour=X_CSR).outcome == "retry_later"
    imported = run_cli(*store_cli, "csr", "import", str(signed[names[0]]), str(signed[reset_name]))
    assert imported.returncode == 0, imported.stderr
    assert f"{names[0]}: matched" in imported.stdout and f"{reset_name}: matched" in imported.stdout
    # Next session: the first phone receives its LSC for the key it kept (no new key generated).
    result = run_enrol(identities[names[0]], capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason, result.key) == ("ok", 1, ""), result
    assert_third_party_lsc(ca_store, capf_server, pki, identities[names[0]], names[0], tmp_path, "offline_ca")
    # The reset phone refuses a certificate for a key it no longer holds: the LSC is stale.
    result = run_enrol(identities[reset_name], capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason) == ("failed", 7), result
    assert "stale" in phone_row(ca_store, reset_name)["operation_reason"]
    assert reset_name in run_cli(*store_cli, "stale-lsc", "list", check=True).stdout
    assert identities[reset_name].lsc is None
    # Its next session starts over with a new key and a new CSR, exported as a bundle this time.
    result = run_enrol(identities[reset_name], capf_server, behaviour=X_CSR)
    assert result.outcome == "retry_later" and result.key == "rsa2048", result
    bundle_dir = tmp_path / "export-2"
    bundle_dir.mkdir()
    run_cli(*store_cli, "csr", "export", "--directory", str(bundle_dir), "--bundle", check=True)
    bundle = bundle_dir / "capf-csr-bundle.pem"
    assert reset_name in bundle.read_text() and names[0] not in bundle.read_text()
    openssl_sign(pki, bundle, tmp_path / "fresh.cer", tmp_path)
    # A certificate signed late for the replaced CSR is recorded stale, never delivered.
    openssl_sign(pki, exported / f"{reset_name}.csr.pem", tmp_path / "late.cer", tmp_path)
    imported = run_cli(*store_cli, "csr", "import", str(tmp_path / "late.cer"), str(tmp_path / "fresh.cer"))
    assert imported.returncode == 0, imported.stderr
    assert f"{reset_name}: stale" in imported.stdout and f"{reset_name}: matched" in imported.stdout
    again = run_cli(*store_cli, "--json", "csr", "import", str(tmp_path / "fresh.cer"))
    assert again.returncode == 0 and '"already_imported"' in again.stdout
    result = run_enrol(identities[reset_name], capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason, result.key) == ("ok", 1, ""), result
    assert_third_party_lsc(ca_store, capf_server, pki, identities[reset_name], reset_name, tmp_path, "offline_ca")
    stale_rows = [row for row in certificate_rows(ca_store, reset_name) if row["status"] == "stale"]
    assert len(stale_rows) == 2


def test_offline_import_refuses_a_certificate_without_key_usage(ca_store, store_cli, capf_server, pki, tmp_path):
    name = "SEP0A0B0C0D0E12"
    trust_pki(ca_store, pki)
    service_config.converge(ca_store, parameters_wanted={"issuer": "offline_ca"})
    identity = enrolling_phone(ca_store, tmp_path, name)
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
    with ca_store.read() as tx:
        request = tx.one("SELECT csr_pem FROM csrs")["csr_pem"]
    certificate = pki.sign_request(x509.load_pem_x509_csr(request.encode()), key_usage=False)
    (tmp_path / "no-ku.pem").write_text(pem(certificate))
    result = run_cli(*store_cli, "csr", "import", str(tmp_path / "no-ku.pem"))
    assert result.returncode != 0 and "KeyUsage" in result.stdout + result.stderr
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"


# -- service coupling ------------------------------------------------------------------------------

@pytest.mark.both_backends
def test_enrolment_service_runs_with_capf(ca_store, pki, tmp_path):
    """With issuer online_ca the serve process runs the enrolment service: a request the CA held
    pending is picked up once approved, without any phone session; a CAPF restart restarts it."""
    name = "SEP0A0B0C0D0E20"
    with AdcsServer(pki, str(tmp_path / "adcs"), mode="pending") as adcs:
        trust_pki(ca_store, pki)
        configure(ca_store, "microsoft", adcs.port)
        identity = enrolling_phone(ca_store, tmp_path, name)
        for round_number, request_id in enumerate((41, 42)):
            # No proxy settings from the environment: the CA is on loopback.
            serving = Serving.on(ca_store, tmp_path / f"serve-{round_number}.log", env={"PATH": "/usr/bin:/bin"})
            with serving.start("--enrolment-interval", "0.3"):
                server = type("Server", (), {"port": serving.port, "capf_pem": capf_pem(ca_store)})
                if round_number:  # a new key and request after the restart
                    set_operation(ca_store, name)
                    identity = phone(tmp_path / "again", name)
                assert run_enrol(identity, server, behaviour=X_CSR).outcome == "retry_later"
                adcs.issue(request_id)
                assert wait_for(lambda: csr_status(ca_store) == "issued", 20, 0.1), "the enrolment service did not poll"
                result = run_enrol(identity, server, behaviour=X_CSR)
                assert (result.outcome, result.end_reason, result.key) == ("ok", 1, ""), result
            assert "certificate enrolment service started" in serving.log()
    assert_third_party_lsc(ca_store, server, pki, identity, name, tmp_path, "online_ca")


def capf_pem(store):
    return authority.current(store)["pem"]


def csr_status(store):
    with store.read() as tx:
        return tx.one("SELECT status FROM csrs ORDER BY id DESC LIMIT 1")["status"]


def test_mutual_tls_towards_the_ca(capf_server, ca_store, pki, tmp_path):
    """The CA demands a client certificate: configured, the phone enrols; missing, a clear reason."""
    certificate, key = pki.client_certificate()
    cert_path, key_path = pki.write_files(str(tmp_path / "client"), certificate, key)
    with EstServer(pki, str(tmp_path / "est"), client_ca=pki.root) as est:
        trust_pki(ca_store, pki)
        configure(ca_store, "est", est.port)
        identity = enrolling_phone(ca_store, tmp_path, "SEP0A0B0C0D0E30")
        refused = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (refused.outcome, refused.end_reason) == ("failed", 7), refused
        assert "tls" in phone_row(ca_store, "SEP0A0B0C0D0E30")["operation_reason"].lower()
        configure(ca_store, "est", est.port, client_certificate=cert_path, client_key=key_path)
        set_operation(ca_store, "SEP0A0B0C0D0E30")
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
    assert_third_party_lsc(ca_store, capf_server, pki, identity, "SEP0A0B0C0D0E30", tmp_path, "online_ca")


def test_offline_ca_example_playbook(capf_server, ca_store, store_path, pki, tmp_path):
    """playbooks/examples/offline_ca.yml with real ansible-playbook: check mode, run, idempotent re-run."""
    collections = install_collection(str(tmp_path / "collections"))
    example = os.path.join(ROOT, "playbooks", "examples", "offline_ca.yml")
    env = {"OPENCAPF_STORE": store_path}
    out = tmp_path / "csr-out"
    variables = ("-e", f"csr_directory={out}")
    trust_pki(ca_store, pki)
    assert changed_tasks(playbook(collections, example, *variables, env=env)) == ["The offline CA signs phone LSCs"]
    name = "SEP0A0B0C0D0E40"
    identity = enrolling_phone(ca_store, tmp_path, name)
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
    export = "Export the pending CSRs for the CA operator"
    assert changed_tasks(playbook(collections, example, *variables, "--check", env=env)) == [export]
    assert not out.exists()
    assert changed_tasks(playbook(collections, example, *variables, env=env)) == [export]
    assert changed_tasks(playbook(collections, example, *variables, env=env)) == []
    openssl_sign(pki, out / f"{name}.csr.pem", tmp_path / "signed.cer", tmp_path)
    signed = ("-e", json.dumps({"signed_certificates": [str(tmp_path / "signed.cer")]}))
    imported = "Import the certificates the CA operator signed"
    assert changed_tasks(playbook(collections, example, *variables, *signed, "--check", env=env)) == [imported]
    assert csr_status(ca_store) == "pending"
    assert changed_tasks(playbook(collections, example, *variables, *signed, env=env)) == [imported]
    assert changed_tasks(playbook(collections, example, *variables, *signed, env=env)) == []
    result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason) == ("ok", 1), result
    assert_third_party_lsc(ca_store, capf_server, pki, identity, name, tmp_path, "offline_ca")


def test_third_party_lsc_authenticates_as_an_lsc(capf_server, ca_store, pki, tmp_path):
    """A phone with an LSC from the online CA authenticates with it (existing certificate, LSC
    precedence) and it is recognised as an LSC, not as a MIC, though both chain to CAPF-trust."""
    name = "SEP0A0B0C0D0E50"
    with EstServer(pki, str(tmp_path / "est")) as est:
        trust_pki(ca_store, pki)
        configure(ca_store, "est", est.port)
        identity = enrolling_phone(ca_store, tmp_path, name)
        assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "ok"
        identity.settings.auth_mode = "existing_cert_lsc"
        set_operation(ca_store, name, auth_mode="existing_cert_lsc")
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
    assert wait_for(lambda: len(session_events(ca_store, name)) == 2, 10)  # recorded after the phone hung up
    assert json.loads(session_events(ca_store, name)[-1]["details"])["presented"] == "lsc"


def session_events(store, name):
    with store.read() as tx:
        return tx.query("SELECT details FROM audit_events WHERE action LIKE 'session.%' AND subject = ? ORDER BY id",
                        (name,))


def test_offline_round_trip_from_the_command_line(capf_server, ca_store, store_cli, pki, tmp_path):
    """Only the CLI: a fleet of X-CSR/1 phones runs Install/Upgrade, the CSRs go out as a bundle,
    the openssl CLI signs them, the import reports each file, and the fleet's next run installs."""
    names = [f"SEP0A0B0C0D0E6{index}" for index in range(3)]
    trust_pki(ca_store, pki)
    service_config.converge(ca_store, parameters_wanted={"issuer": "offline_ca"})
    for name in names:
        add_phone(ca_store, name, operation="install_upgrade", key_order="rsa")
    (tmp_path / "capf.pem").write_text(capf_server.capf_pem)
    fleet = (*store_cli, "--json", "phone", "fleet", "--server", "127.0.0.1", "--port",
             str(capf_server.port), "--capf-cert", str(tmp_path / "capf.pem"), "--retries", "0", "--first", names[0],
             "--count", "3", "--dir", str(tmp_path / "fleet"), "--x-csr")
    first = json.loads(run_cli(*fleet, check=True).stdout)
    assert set(first["outcomes"].values()) == {"retry_later"}, first
    out = tmp_path / "out"
    run_cli(*store_cli, "csr", "export", "--directory", str(out), "--bundle", check=True)
    bundle = (out / "capf-csr-bundle.pem").read_text()
    signed = []
    for index, block in enumerate(bundle.split("-----END CERTIFICATE REQUEST-----\n")[:-1]):
        (tmp_path / f"request-{index}.pem").write_text(block + "-----END CERTIFICATE REQUEST-----\n")
        openssl_sign(pki, tmp_path / f"request-{index}.pem", tmp_path / f"signed-{index}.cer", tmp_path)
        signed.append(str(tmp_path / f"signed-{index}.cer"))
    assert len(signed) == 3
    report = json.loads(run_cli(*store_cli, "--json", "csr", "import", *signed, check=True).stdout)
    assert sorted(report["matched"]) == names and report["problems"] == []
    second = json.loads(run_cli(*fleet, check=True).stdout)
    assert set(second["outcomes"].values()) == {"ok"}, second
    for name in names:
        installed = [row for row in certificate_rows(ca_store, name) if row["status"] == "installed"]
        assert len(installed) == 1 and installed[0]["source"] == "offline_ca"
        assert verify_with_ca(pki, installed[0]["pem"], tmp_path).returncode == 0


def test_microsoft_with_ntlm_and_japanese_pages(capf_server, ca_store, pki, tmp_path, monkeypatch):
    users = tmp_path / "ntlm-users"
    users.write_text(f"EXAMPLE:{USERNAME}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    name = "SEP0A0B0C0D0E70"
    with AdcsServer(pki, str(tmp_path / "adcs"), language="ja", ntlm=True) as adcs:
        trust_pki(ca_store, pki)
        configure(ca_store, "microsoft", adcs.port, auth="ntlm", username=f"EXAMPLE\\{USERNAME}")
        identity = enrolling_phone(ca_store, tmp_path, name)
        result = run_enrol(identity, capf_server, behaviour=X_CSR)
        assert (result.outcome, result.end_reason) == ("ok", 1), result
        assert adcs.ntlm_users == [f"EXAMPLE\\{USERNAME}"]
    assert_third_party_lsc(ca_store, capf_server, pki, identity, name, tmp_path, "online_ca")

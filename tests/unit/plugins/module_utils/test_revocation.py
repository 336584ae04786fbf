"""Revocation and the CAPF CRL, with a clock given to the scheduler's revocation duty: an LSC taken past
its expiry is revoked (cessation of operation), the CRL lists it with its reason, verifies against the
CAPF certificate with openssl, is pkilint-clean, and makes ``openssl verify -crl_check`` reject the
revoked LSC and accept a valid one; the crl_path file follows; operators revoke through the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

from pkilint import loader
from pkilint.pkix import crl as pkix_crl
from pkilint.pkix import extension, name
from pkilint import pkix

from _opencapf import revocation
from _opencapf.ca import authority, lsc
from _opencapf.ca import certificates as c
from _opencapf.ca import crl as crl_module
from _opencapf.cli.main import main as cli_main
from _opencapf.dependencies import x509
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import utc_now
from support.crl_http import active_crl
from support.tools import openssl, run_cli

SHORT, LONG = "SEP0000000000A1", "SEP0000000000A2"


def _crl_lint_errors(der: bytes) -> list[str]:
    validator = pkix_crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [pkix_crl.create_issuer_validator_container([]), pkix_crl.create_validity_validator_container([]),
         pkix_crl.create_extensions_validator_container([])])
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "capf.crl")
    return [f"{finding.finding.code} ({finding.finding.severity})" for result in validator.validate(document.root)
            for finding in result.finding_descriptions if str(finding.finding.severity) in ("ERROR", "FATAL")]


def _issue(store, device, key, days):
    issued = lsc.issue(store, device, key.public_key(), source="capf", validity_days=days)
    with store.transaction() as tx:
        phone = tx.one("SELECT * FROM phones WHERE name = ?", (device,))
        certificate_records.install(tx, "test", phone, issued.id)
    return issued


def _pem_file(path, text):
    path.write_text(text)
    return str(path)


def test_an_expired_lsc_is_revoked_and_the_crl_says_so(ca_store, rsa_phone_key, ec_phone_key, tmp_path):
    crl_path = tmp_path / "published" / "capf.crl"
    crl_path.parent.mkdir()
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_path": str(crl_path), "crl_validity_hours": 24})
    short = _issue(ca_store, SHORT, rsa_phone_key, 1)
    long = _issue(ca_store, LONG, ec_phone_key, 30)
    later = utc_now().replace(microsecond=0) + dt.timedelta(days=1, minutes=5)  # past SHORT's notAfter only

    scheduling = Scheduling(ca_store, clock=lambda: later)
    try:
        scheduling.tick()
    finally:
        scheduling.close()

    with ca_store.read() as tx:
        revoked = certificate_records.revoked_lscs(tx)
    assert [(row["device_name"], row["revocation_reason"], row["revoked_at"]) for row in revoked] == [
        (SHORT, "cessation_of_operation", later.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    der = crl_path.read_bytes()
    assert stat.S_IMODE(os.stat(crl_path).st_mode) == 0o644
    assert der == active_crl(ca_store, later)["der"]
    crl = x509.load_der_x509_crl(der)
    entry = crl.get_revoked_certificate_by_serial_number(int(short.serial, 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.cessation_of_operation
    assert crl.get_revoked_certificate_by_serial_number(int(long.serial, 16)) is None
    assert crl.last_update_utc == later and crl.next_update_utc == later + dt.timedelta(hours=24)
    # The first CRL: numbered by its signing time in milliseconds (a restored store never goes back).
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == int(later.timestamp()) * 1000
    assert _crl_lint_errors(der) == []

    capf_pem = _pem_file(tmp_path / "capf.pem", authority.current(ca_store)["pem"])
    crl_pem = _pem_file(tmp_path / "capf-crl.pem", crl_module.to_pem(der))
    verified = openssl("crl", "-in", crl_pem, "-CAfile", capf_pem, "-noout")
    assert b"verify OK" in verified.stdout + verified.stderr
    at = str(int(later.timestamp()) + 60)
    for issued, accepted in ((short, False), (long, True)):
        lsc_pem = _pem_file(tmp_path / f"{issued.device_name}.pem", issued.pem)
        result = openssl("verify", "-attime", at, "-crl_check", "-CAfile", capf_pem, "-CRLfile", crl_pem, lsc_pem,
                         check=False)
        output = (result.stdout + result.stderr).decode()
        assert (result.returncode == 0) is accepted, output
        if not accepted:
            assert "certificate revoked" in output


def test_a_new_crl_when_revoked_and_before_next_update_never_else(ca_store, rsa_phone_key):
    issued = _issue(ca_store, SHORT, rsa_phone_key, 30)
    now = utc_now().replace(microsecond=0)
    [first] = revocation.run_duty(ca_store, now)["crls"]
    assert first["number"] == int(now.timestamp()) * 1000 and first["entries"] == 0
    assert revocation.run_duty(ca_store, now + dt.timedelta(hours=1))["crls"] == []  # nothing changed
    revocation.revoke_lsc(ca_store, SHORT, "key_compromise")
    [second] = revocation.run_duty(ca_store, now + dt.timedelta(hours=2))["crls"]
    assert second["number"] == int((now + dt.timedelta(hours=2)).timestamp()) * 1000
    assert second["entries"] == 1 and second["reason"] == "LSCs were revoked"
    assert revocation.run_duty(ca_store, now + dt.timedelta(hours=80))["crls"] == []  # before half of 168 h
    [third] = revocation.run_duty(ca_store, now + dt.timedelta(hours=87))["crls"]
    assert third["number"] > second["number"] and third["reason"] == "half of its validity has passed"
    entry = crl_module.describe(active_crl(ca_store, now + dt.timedelta(hours=87))["der"])["entries"]
    assert entry == [{"serial": issued.serial, "reason": "key_compromise", "revoked_at": entry[0]["revoked_at"]}]


def test_revoke_after_expiry_off_keeps_expired_lscs(ca_store, rsa_phone_key):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"revoke_after_expiry": False})
    _issue(ca_store, SHORT, rsa_phone_key, 1)
    result = revocation.run_duty(ca_store, utc_now() + dt.timedelta(days=3))
    assert result["expired"] == []
    with ca_store.read() as tx:
        assert certificate_records.revoked_lscs(tx) == []


def test_lscs_name_the_crl_distribution_point_when_configured(ca_store, rsa_phone_key):
    url = "http://capf.example.com:8080/capf.crl"
    plain = x509.load_pem_x509_certificate(_issue(ca_store, SHORT, rsa_phone_key, 30).pem.encode())
    assert not any(isinstance(ext.value, x509.CRLDistributionPoints) for ext in plain.extensions)
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_url": url})
    certificate = x509.load_pem_x509_certificate(_issue(ca_store, LONG, rsa_phone_key, 30).pem.encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not points.critical
    issuer = authority.current(ca_store)["fingerprint"]
    assert [name.value for name in points.value[0].full_name] == [f"http://capf.example.com:8080/capf-{issuer[:16]}.crl"]


def test_the_capf_certificate_may_sign_crls(ca_store):
    certificate = c.load_pem_certificate(authority.current(ca_store)["pem"])
    assert crl_module.can_sign_crls(certificate)


def _cli(capsys, *args):
    """The CLI in this process (as ``opencapf`` runs it): exit code, standard output, standard error."""
    capsys.readouterr()
    code = cli_main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_operator_revocation_from_the_cli(ca_store, store_path, rsa_phone_key, tmp_path, capsys):
    issued = _issue(ca_store, SHORT, rsa_phone_key, 30)
    options = ("--store", store_path)
    code, out, _err = _cli(capsys, *options, "--json", "phone", "revoke", SHORT, "--reason", "key_compromise",
                           "--check")
    assert code == 0 and json.loads(out)["revoked"] == [issued.serial]
    with ca_store.read() as tx:
        assert certificate_records.revoked_lscs(tx) == []  # --check changes nothing
    done = json.loads(run_cli(*options, "--json", "phone", "revoke", SHORT, "--reason", "key_compromise",
                              check=True).stdout)  # the real command, once
    assert done["changed"] is True and done["after"]["lscs"][0]["revocation_reason"] == "key_compromise"
    code, out, _err = _cli(capsys, *options, "--json", "phone", "revoke", SHORT, "--reason", "key_compromise")
    assert code == 0 and json.loads(out)["changed"] is False
    with ca_store.read() as tx:
        events = tx.query("SELECT details FROM audit_events WHERE action = 'certificate.revoked'")
    assert len(events) == 1 and json.loads(events[0]["details"])["via"] == "cli"

    written = tmp_path / "out.crl"
    assert _cli(capsys, *options, "crl", "write", str(written))[0] == 0
    code, out, _err = _cli(capsys, *options, "--json", "crl", "show")
    shown = json.loads(out)
    assert shown["entries"][0]["serial"] == issued.serial and shown["entries"][0]["reason"] == "key_compromise"
    assert crl_module.describe(written.read_bytes())["number"] == shown["number"]
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o644

    code, _out, err = _cli(capsys, *options, "phone", "revoke", SHORT, "--reason", "key_compromise", "--serial", "xyz")
    assert code == 1 and err.count("\n") == 1 and "serial" in err

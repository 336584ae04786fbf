"""A CA never lies about revocation, across CAPF certificate rotations.

Invariant: for every CAPF certificate whose key the store holds and that has not expired (the active
one and each retired one), a current CRL signed with that certificate's key exists, is published (its
file beside ``crl_path`` and over HTTP at the location its LSCs name as their CRL distribution point),
and lists exactly the revoked LSCs that certificate signed, by serial and with their reason. It is
checked as a property over every CAPF certificate after two rotations through the real CLI, with LSCs
revoked by every path (operator, superseded, removed phone) under each, the service's own scheduler
signing and publishing, the real HTTP responder on a socket, ``openssl`` and pkilint judging the result.
A CAPF certificate without cRLSign (uploaded, or made by an earlier version) is reported, not skipped."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from _opencapf import revocation, secretbox
from _opencapf.ca import authority, keys, lsc
from _opencapf.cli.main import main as cli_main
from _opencapf.dependencies import hashes, serialization, x509, NameOID
from _opencapf.ca import crl as crl_module
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import utc_now
from support.tools import openssl
from support.crl_http import CrlHttp, active_crl

from test_revocation import _crl_lint_errors  # pylint: disable=import-error


def _issue(store, device, key):
    issued = lsc.issue(store, device, key.public_key(), source="capf", validity_days=30)
    with store.transaction() as tx:
        certificate_records.install(tx, "test", phone_records.get(tx, device), issued.id)
    return issued


def _cli(capsys, *args):
    capsys.readouterr()
    code = cli_main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def _file(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("ascii"))
    return str(path)


def _issued_by(lsc_pem: str, capf_certificate) -> bool:
    """Whether ``capf_certificate``'s key signed the LSC (the signature, not the names, decides)."""
    certificate = x509.load_pem_x509_certificate(lsc_pem.encode("ascii"))
    try:
        certificate.verify_directly_issued_by(capf_certificate)
        return True
    except Exception:  # pylint: disable=broad-except  # InvalidSignature, or a key of another type
        return False


@pytest.mark.both_backends
def test_every_capf_certificate_keeps_a_crl_of_exactly_its_revoked_lscs(ca_store, store_cli, rsa_phone_key, ec_phone_key,
                                                                        tmp_path, capsys):
    published = tmp_path / "www"
    published.mkdir()
    responder = CrlHttp(ca_store)
    base_url = f"http://127.0.0.1:{responder.port}/capf.crl"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_path": str(published / "capf.crl"), "crl_url": base_url})
    try:
        # Under the first CAPF certificate: one revoked by an operator, one whose phone is removed, one valid.
        names = ("SEP0000000001A1", "SEP0000000001A2", "SEP0000000001A3")
        first = [_issue(ca_store, name, rsa_phone_key) for name in names]
        revocation.revoke_lsc(ca_store, "SEP0000000001A1", "key_compromise")
        with ca_store.transaction() as tx:
            phone_records.delete(tx, "test", "SEP0000000001A2")
        _cli(capsys, *store_cli, "ca", "regenerate")  # the first rotation
        # Under the second: one superseded by a newer LSC of its phone, one revoked as unspecified (no reason code).
        second = [_issue(ca_store, name, ec_phone_key) for name in ("SEP0000000002B1", "SEP0000000002B2")]
        revocation.revoke_lsc(ca_store, "SEP0000000002B2", "unspecified")
        _cli(capsys, *store_cli, "ca", "regenerate", "--key-type", "ec256")  # the second rotation
        # Under the active one: the phone of B1 gets a new LSC (B1 superseded), and one is revoked.
        third = [_issue(ca_store, name, rsa_phone_key) for name in ("SEP0000000002B1", "SEP0000000003C1")]
        revocation.revoke_lsc(ca_store, "SEP0000000003C1", "affiliation_changed")

        scheduling = Scheduling(ca_store)  # the service's scheduler: signs what is due, then publishes
        try:
            scheduling.tick()
        finally:
            scheduling.close()

        with ca_store.read() as tx:
            revoked = certificate_records.revoked_lscs(tx, "capf", with_pem=True)
        all_lscs = first + second + third
        history = authority.history(ca_store)
        assert len(history) == 3
        served_active = responder.get(base_url)
        for summary in reversed(history):  # the oldest first
            capf = x509.load_pem_x509_certificate(summary["pem"].encode("ascii"))
            own = [issued for issued in all_lscs if _issued_by(issued.pem, capf)]
            assert own, "every CAPF certificate here signed LSCs"
            # What a relying party fetches at the CRL distribution point of each LSC it signed: one CRL.
            fetched = set()
            for issued in own:
                certificate = x509.load_pem_x509_certificate(issued.pem.encode("ascii"))
                url = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
                status, body, media_type = responder.get(url)
                assert (status, media_type) == (200, "application/pkix-crl"), (url, status)
                fetched.add(body)
            assert len(fetched) == 1
            der = fetched.pop()

            # Exactly the revoked LSCs it signed, by serial and reason.
            expected = {(row["serial"], row["revocation_reason"]) for row in revoked if _issued_by(row["pem"], capf)}
            listed = {(entry["serial"], entry["reason"]) for entry in crl_module.describe(der)["entries"]}
            assert listed == expected, (summary["common_name"], listed, expected)
            assert expected, "every CAPF certificate here has a revoked LSC"

            # Signed with its key, current, RFC 5280 clean; openssl refuses exactly its revoked LSCs with it.
            issuer_id = summary["fingerprint"][:16]
            capf_pem = _file(tmp_path / f"{issuer_id}.pem", summary["pem"])
            crl_pem = _file(tmp_path / f"{issuer_id}-crl.pem", crl_module.to_pem(der))
            verified = openssl("crl", "-in", crl_pem, "-CAfile", capf_pem, "-noout")
            assert b"verify OK" in verified.stdout + verified.stderr
            crl = x509.load_der_x509_crl(der)
            assert crl.last_update_utc <= utc_now() < crl.next_update_utc
            assert _crl_lint_errors(der) == []
            for issued in own:
                result = openssl("verify", "-crl_check", "-CAfile", capf_pem, "-CRLfile", crl_pem,
                                 _file(tmp_path / f"{issued.serial}.pem", issued.pem), check=False)
                output = (result.stdout + result.stderr).decode()
                if issued.serial in {serial for serial, _reason in expected}:
                    assert result.returncode != 0 and "certificate revoked" in output, output
                else:
                    assert result.returncode == 0, output

            # Published as a file too: its own beside crl_path, and crl_path itself for the active one.
            assert (published / f"capf-{issuer_id}.crl").read_bytes() == der
            if summary["active"]:  # the common locations keep serving the active certificate's CRL
                assert served_active[1] == der and (published / "capf.crl").read_bytes() == der
        assert responder.get(f"http://127.0.0.1:{responder.port}/capf-{'0' * 16}.crl")[0] == 404

        # capf_info's crl section speaks of every one of them, with no problem.
        with ca_store.read() as tx:
            overview = revocation.crl_overview(ca_store, tx)
        assert sorted(item["fingerprint"] for item in overview["issuers"]) == sorted(s["fingerprint"] for s in history)
        assert all(item["number"] and not item["problems"] and item["key_held"] for item in overview["issuers"])
    finally:
        responder.close()


def _capf_without_crl_sign(tmp_path):
    """A CAPF certificate as earlier versions made them: KeyUsage digitalSignature and keyCertSign only."""
    key = keys.generate("rsa2048")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy CAPF")])
    now = utc_now()
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    certificate_path = _file(tmp_path / "legacy.pem", certificate.public_bytes(serialization.Encoding.PEM))
    key_path = tmp_path / "legacy.key"
    key_path.write_bytes(keys.private_key_pem(key))
    key_path.chmod(0o600)
    return certificate_path, str(key_path)


def test_a_capf_certificate_without_crl_sign_is_reported_never_skipped(ca_store, store_cli, rsa_phone_key, tmp_path,
                                                                       capsys, caplog):
    certificate_path, key_path = _capf_without_crl_sign(tmp_path)
    _cli(capsys, *store_cli, "ca", "upload", "--certificate", certificate_path, "--key", key_path)
    issued = _issue(ca_store, "SEP0000000004D1", rsa_phone_key)
    revocation.revoke_lsc(ca_store, "SEP0000000004D1", "key_compromise")
    with caplog.at_level(logging.WARNING, logger="opencapf.revocation"):
        signed = revocation.refresh_crls(ca_store)
    legacy = authority.current(ca_store)
    assert {crl["signer_fingerprint"] for crl in signed} == {item["fingerprint"] for item in authority.history(ca_store)}
    assert any("Legacy CAPF" in message and "cRLSign" in message for message in caplog.messages), caplog.messages
    with ca_store.read() as tx:
        overview = revocation.crl_overview(ca_store, tx)
    [item] = [item for item in overview["issuers"] if item["fingerprint"] == legacy["fingerprint"]]
    assert item["crl_sign"] is False and item["number"] and len(item["problems"]) == 1
    assert "cRLSign" in item["problems"][0] and "regenerate" in item["problems"][0]
    listed = crl_module.describe(active_crl(ca_store)["der"])["entries"]
    assert [entry["serial"] for entry in listed] == [issued.serial]  # still listed, and what OpenSSL says of it:
    capf_pem = _file(tmp_path / "capf.pem", legacy["pem"])
    crl_pem = _file(tmp_path / "crl.pem", crl_module.to_pem(active_crl(ca_store)["der"]))
    result = openssl("verify", "-crl_check", "-CAfile", capf_pem, "-CRLfile", crl_pem,
                     _file(tmp_path / "lsc.pem", issued.pem), check=False)
    assert result.returncode != 0
    code = cli_main([*store_cli, "crl", "show"])
    assert code == 0 and "opencapf: warning: CAPF certificate Legacy CAPF" in capsys.readouterr().err


@pytest.mark.both_backends
def test_a_retired_capf_certificate_keeps_its_crl_until_it_expires(ca_store, store_cli, rsa_phone_key, capsys):
    validity_hours = 24
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_validity_hours": validity_hours})
    _issue(ca_store, "SEP0000000005E1", rsa_phone_key)
    retired = authority.current(ca_store)
    _cli(capsys, *store_cli, "ca", "regenerate")
    now = utc_now().replace(microsecond=0)
    assert {crl["signer_fingerprint"] for crl in revocation.run_duty(ca_store, now)["crls"]} == {
        retired["fingerprint"], authority.current(ca_store)["fingerprint"]}
    # Half of the validity later each is signed anew; once the retired one has expired, only the active one.
    later = now + dt.timedelta(hours=validity_hours // 2)
    assert len(revocation.run_duty(ca_store, later)["crls"]) == 2
    expired = dt.datetime.fromisoformat(retired["not_after"].replace("Z", "+00:00")) + dt.timedelta(days=1)
    assert [crl["active"] for crl in revocation.run_duty(ca_store, expired)["crls"]] == [True]


def test_a_capf_certificate_whose_key_cannot_be_loaded_is_reported(ca_store, store_cli, capsys, caplog):
    """A retired CAPF certificate whose key this store cannot open (recorded before keys were sealed, its
    key file on another host): no CRL can be signed for it; the service warns, capf_info and the CLI say so,
    and the active certificate's CRL is signed all the same."""
    retired = authority.current(ca_store)
    _cli(capsys, *store_cli, "ca", "regenerate")
    with ca_store.transaction() as tx:
        assert secretbox.delete(tx, f"capf_private_key:{retired['fingerprint']}")
    with caplog.at_level(logging.WARNING, logger="opencapf.revocation"):
        signed = revocation.refresh_crls(ca_store)
    assert [crl["signer_fingerprint"] for crl in signed] == [authority.current(ca_store)["fingerprint"]]
    assert any(retired["common_name"] in message and "private key cannot be loaded" in message
               for message in caplog.messages), caplog.messages
    with ca_store.read() as tx:
        overview = revocation.crl_overview(ca_store, tx)
    [item] = [item for item in overview["issuers"] if not item["active"]]
    assert (item["fingerprint"], item["key_held"], item["number"]) == (retired["fingerprint"], False, None)
    assert len(item["problems"]) == 1 and "listed on no CRL" in item["problems"][0]
    capsys.readouterr()
    assert cli_main([*store_cli, "crl", "show"]) == 0
    assert "private key cannot be loaded" in capsys.readouterr().err

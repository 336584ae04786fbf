"""capf_offline_ca: export pending CSRs and import signed certificates; check mode, idempotence.

On both backends; of the refused certificates, every defect on SQLite and two on PostgreSQL."""

from __future__ import annotations

import json

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from ansible_collections.opencapf.capf.plugins.modules import capf_offline_ca

from support.store_phones import create_phone
from support.stores import backend_cases
from support.third_party_ca import DEFECTS, EnterprisePki, pem, phone_csr
from _opencapf import enrolment, trust
from _opencapf.store import open_store
from _opencapf.vocabulary import IMPORT_PROBLEMS

NAMES = ("SEP001122334455", "SEP00AABBCCDDEE")


def _seed(location, pki):
    """Two phones whose phone-signed CSRs wait for the offline CA."""
    with open_store(location, actor="test") as store:
        trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store="capf-trust")
        for name in NAMES:
            signed = phone_csr(name, rsa.generate_private_key(public_exponent=65537, key_size=2048))
            with store.transaction() as tx:
                phone = create_phone(tx, name, operation="install_upgrade")
                enrolment.add_request(tx, "test", phone, signed)


def test_export_check_mode_and_idempotence(run, location, tmp_path):
    _seed(location, EnterprisePki())
    out = tmp_path / "out"
    args = {"store": location, "state": "exported", "path": str(out)}
    checked = run(capf_offline_ca, args, check=True)
    assert checked["changed"] is True and not out.exists()
    assert [item["device_name"] for item in checked["csrs"]] == list(NAMES)
    first = run(capf_offline_ca, args, diff=True)
    assert first["changed"] is True and sorted(p.name for p in out.iterdir()) == [f"{n}.csr.pem" for n in NAMES]
    assert first["diff"]["after"]["files"] == first["files"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in out.iterdir())
    assert run(capf_offline_ca, args)["changed"] is False
    bundle = run(capf_offline_ca, {**args, "bundle": True, "devices": [NAMES[1]]})
    text = (out / "capf-csr-bundle.pem").read_text()
    assert bundle["changed"] is True and NAMES[1] in text and NAMES[0] not in text


def test_import_check_mode_idempotence_and_problems(run, location, tmp_path):
    pki = EnterprisePki()
    _seed(location, pki)
    out = tmp_path / "out"
    run(capf_offline_ca, {"store": location, "state": "exported", "path": str(out)})
    request = x509.load_pem_x509_csr((out / f"{NAMES[0]}.csr.pem").read_bytes())
    (tmp_path / "signed.pem").write_text(pem(pki.sign_request(request)) + pem(pki.issuing))
    args = {"store": location, "state": "imported", "src": [str(tmp_path / "signed.pem")]}
    checked = run(capf_offline_ca, args, check=True)
    assert checked["changed"] is True and checked["matched"] == [NAMES[0]]
    with open_store(location, actor="test") as store, store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM certificates") == 0
    imported = run(capf_offline_ca, args)
    assert imported["changed"] is True and imported["matched"] == [NAMES[0]] and imported["problems"] == []
    with open_store(location, actor="test") as store, store.read() as tx:
        row = tx.one("SELECT status, source, issuer FROM certificates")
    assert dict(row) == {"status": "issued", "source": "offline_ca", "issuer": pki.issuing.subject.rfc4514_string()}
    again = run(capf_offline_ca, args)
    assert again["changed"] is False and again["already_imported"][0]["device_name"] == NAMES[0]
    # A certificate without KeyUsage is refused with the reason; nothing is recorded for it.
    other = x509.load_pem_x509_csr((out / f"{NAMES[1]}.csr.pem").read_bytes())
    (tmp_path / "no-ku.pem").write_text(pem(pki.sign_request(other, key_usage=False)))
    refused = run(capf_offline_ca, {**args, "src": [str(tmp_path / "no-ku.pem")]})
    assert refused["failed"] is True and "KeyUsage" in refused["msg"] and refused["changed"] is False
    assert run(capf_offline_ca, {**args, "src": [str(tmp_path / "no-ku.pem")], "fail_on_problems": False})[
        "problems"][0]["reason"]


@pytest.mark.parametrize("store_location, defect", backend_cases(DEFECTS, ["wrong_key", "untrusted_chain"]),
                         indirect=["store_location"])
def test_import_refuses_a_certificate_that_is_not_the_one_asked_for(run, location, tmp_path, defect):
    """Another device's CN, another key, CA:TRUE, dates, KeyUsage, chain: refused with the code,
    per file; nothing is recorded for the phone, whose CSR still waits."""
    pki = EnterprisePki()
    _seed(location, pki)
    out = tmp_path / "out"
    run(capf_offline_ca, {"store": location, "state": "exported", "path": str(out)})
    request = x509.load_pem_x509_csr((out / f"{NAMES[0]}.csr.pem").read_bytes())
    (tmp_path / "signed.pem").write_text(pem(pki.sign_request(request, defect=defect)) + pem(pki.issuing))
    args = {"store": location, "state": "imported", "src": [str(tmp_path / "signed.pem")]}
    assert run(capf_offline_ca, args, check=True)["failed"] is True
    refused = run(capf_offline_ca, args)
    assert refused["failed"] is True and refused["changed"] is False and refused["matched"] == []
    assert f"[{defect}]" in refused["msg"]
    [problem] = refused["problems"]
    assert problem["code"] == defect and problem["device_name"] == NAMES[0]
    assert problem["file"] == str(tmp_path / "signed.pem")
    with open_store(location, actor="test") as store, store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM certificates") == 0
        csr = tx.one("SELECT status, reason FROM csrs WHERE phone_id = (SELECT id FROM phones WHERE name = ?)",
                     (NAMES[0],))
        events = tx.query("SELECT details FROM audit_events WHERE action = 'certificate.refused'")
    assert csr["status"] == "pending" and f"[{defect}]" in csr["reason"]
    assert [json.loads(event["details"])["code"] for event in events] == [defect]  # check mode recorded nothing


def test_documented_problem_codes_are_the_engine_vocabulary():
    documented = yaml.safe_load(capf_offline_ca.RETURN)["problems"]["contains"]["code"]["choices"]
    assert tuple(documented) == IMPORT_PROBLEMS

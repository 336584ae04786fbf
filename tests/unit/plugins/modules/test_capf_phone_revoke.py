"""capf_phone revoke: check mode and diff, the revocation with its reason and audit event, idempotence,
a serial naming one LSC, and the views (capf_phone status, capf_info, the CSV report) telling the truth."""

from __future__ import annotations

import csv
import json

from ansible_collections.opencapf.capf.plugins.modules import capf_info, capf_phone

from _opencapf import revocation
from _opencapf.ca import authority, lsc
from _opencapf.dependencies import ec
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from support.stores import query

NAME = "SEP00112233AA01"


def _installed_lsc(location, state_dir, name=NAME):
    with open_store(location, state_dir=state_dir, actor="test") as store:
        authority.ensure(store)
        issued = lsc.issue(store, name, ec.generate_private_key(ec.SECP256R1()).public_key(), source="capf")
        with store.transaction() as tx:
            phone = tx.one("SELECT * FROM phones WHERE name = ?", (name,))
            certificate_records.install(tx, "test", phone, issued.id)
    return issued.serial


def test_revoke_check_mode_then_run_then_unchanged(run, location, state_dir, tmp_path):
    serial = _installed_lsc(location, state_dir)
    args = {"store": location, "name": NAME, "revoke": {"reason": "key_compromise"}}

    checked = run(capf_phone, args, check=True, diff=True)
    assert checked["changed"] is True and checked["revoked"] == [serial]
    assert checked["diff"]["before"]["lscs"] == [{"serial": serial, "status": "installed", "revocation_reason": None,
                                                  "revoked_at": None}]
    assert checked["diff"]["after"]["lscs"][0]["status"] == "revoked"
    assert query(location, "SELECT status FROM certificates")[0]["status"] == "installed"

    done = run(capf_phone, args, diff=True)
    assert done["changed"] is True and done["revoked"] == [serial]
    assert done["status"]["lsc"]["status"] == "revoked"  # the phone's current LSC, not reported valid
    assert "lscs" not in done["phone"]
    row = query(location, "SELECT status, revocation_reason, revoked_at FROM certificates")[0]
    assert row["status"] == "revoked" and row["revocation_reason"] == "key_compromise" and row["revoked_at"]
    events = query(location, "SELECT details FROM audit_events WHERE action = 'certificate.revoked'")
    assert [json.loads(event["details"])["reason"] for event in events] == ["key_compromise"]

    again = run(capf_phone, args, diff=True)
    assert again["changed"] is False and again["revoked"] == []
    assert again["diff"]["before"] == again["diff"]["after"]

    report = tmp_path / "report.csv"
    info = run(capf_info, {"store": location, "gather": ["phones", "revoked_lscs"], "report_path": str(report)})
    assert info["phones"][0]["lsc"]["status"] == "revoked"
    assert [(item["serial"], item["revocation_reason"]) for item in info["revoked_lscs"]] == [(serial, "key_compromise")]
    with open(report, encoding="utf-8") as handle:
        assert next(csv.DictReader(handle))["lsc_status"] == "revoked"


def test_revoke_names_one_lsc_by_serial_and_refuses_an_unknown_one(run, location, state_dir):
    serial = _installed_lsc(location, state_dir)
    unknown = run(capf_phone, {"store": location, "name": NAME, "revoke": {"reason": "superseded", "serial": "abc"}})
    assert unknown["failed"] and "serial" in unknown["msg"] and "\n" not in unknown["msg"]
    spelled = ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)).upper()
    done = run(capf_phone, {"store": location, "name": NAME, "revoke": {"reason": "superseded", "serial": spelled}})
    assert done["changed"] is True and done["revoked"] == [serial]
    bad = run(capf_phone, {"store": location, "name": NAME, "revoke": {"reason": "certificate_hold"}})
    assert bad["failed"] and "reason" in bad["msg"]


def test_crl_section_of_capf_info(run, location, state_dir):
    _installed_lsc(location, state_dir)
    before = run(capf_info, {"store": location, "gather": ["crl"]})["crl"]
    assert before["number"] is None and [(item["active"], item["number"], item["problems"], item["key_held"],
                                          item["crl_sign"]) for item in before["issuers"]] == [(True, None, [], True, True)]
    run(capf_phone, {"store": location, "name": NAME, "revoke": {"reason": "affiliation_changed"}})
    with open_store(location, state_dir=state_dir, actor="test") as store:
        [signed] = revocation.refresh_crls(store)
    crl = run(capf_info, {"store": location, "gather": ["crl"]})["crl"]
    assert crl["number"] == signed["number"] and crl["entries"] == 1
    assert crl["issuers"][0]["number"] == signed["number"]
    assert crl["issuers"][0]["fingerprint"] == crl["signer_fingerprint"]

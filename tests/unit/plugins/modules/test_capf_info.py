"""capf_info and capf_stale_lsc: read-only views, the CAPF report, deleting stale LSCs."""

from __future__ import annotations

import csv
import time

from cryptography.hazmat.primitives.asymmetric import ec
from ansible_collections.opencapf.capf.plugins.modules import capf_info, capf_phone, capf_stale_lsc

from _opencapf.ca import authority, lsc
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from support.phones import phone, run_enrol
from support.store_phones import change_phone
from support.protocol import add_phone
from support.stores import query

STALE = "a test's LSC never to be installed"


def _seed(location):
    """Two phones: one with an installed LSC and a stale one, one with a pending CSR and a session."""
    with open_store(location, actor="test") as store:
        authority.ensure(store)
        installed = lsc.issue(store, "SEP001122334455", ec.generate_private_key(ec.SECP256R1()).public_key())
        stale = lsc.issue(store, "SEP001122334455", ec.generate_private_key(ec.SECP256R1()).public_key())
        other = lsc.issue(store, "SEP00AABBCCDDEE", ec.generate_private_key(ec.SECP256R1()).public_key())
        with store.transaction() as tx:
            certificate_records.set_status(tx, "test", installed.id, "installed")
            certificate_records.set_status(tx, "test", stale.id, "stale", reason=STALE)
            certificate_records.set_status(tx, "test", other.id, "stale", reason=STALE)
            phone_id = tx.scalar("SELECT id FROM phones WHERE name = 'SEP00AABBCCDDEE'")
            tx.insert("INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, created_at, updated_at) "
                      "VALUES (?, 'ab', ?, 'pending', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z')", (phone_id, b"\x00"))
            tx.insert("INSERT INTO sessions (session_id, device_name, peer, operation, outcome, reason, started_at, "
                      "duration_ms) VALUES (7, 'SEP001122334455', '127.0.0.1', 'install_upgrade', 'succeeded', '', "
                      "'2026-11-01T10:00:00Z', 120)")
    return installed, stale


def test_info_sections_and_report(run, location, tmp_path):
    installed, stale = _seed(location)
    report = tmp_path / "report.csv"
    info = run(capf_info, {"store": location, "report_path": str(report)}, check=True)
    assert info["changed"] is False
    assert info["service"]["parameters"]["port"] == 3804 and info["service"]["state"]["state"] == "stopped"
    assert info["capf_certificates"][0]["active"] is True and "pem" not in info["capf_certificates"][0]
    phones = {phone["device_name"]: phone for phone in info["phones"]}
    assert phones["SEP001122334455"]["lsc"]["serial"] == installed.serial
    assert phones["SEP001122334455"]["lsc"]["status"] == "installed"
    assert phones["SEP00AABBCCDDEE"]["lsc"] is None
    assert [item["device_name"] for item in info["pending_csrs"]] == ["SEP00AABBCCDDEE"]
    assert info["pending_csrs"][0]["created_at"] == "2026-11-01T10:00:00Z"
    assert sorted(item["serial"] for item in info["stale_lscs"] if item["device_name"] == "SEP001122334455") == [stale.serial]
    assert info["sessions"][0]["outcome"] == "succeeded"
    rows = list(csv.DictReader(report.open()))
    assert [(row["device_name"], row["lsc_status"]) for row in rows] == [
        ("SEP001122334455", "installed"), ("SEP00AABBCCDDEE", "none")]
    only = run(capf_info, {"store": location, "gather": ["phones"], "query": {"lsc_status": ["installed"]}})
    assert set(only) >= {"phones"} and "service" not in only
    assert [phone["device_name"] for phone in only["phones"]] == ["SEP001122334455"]
    status = run(capf_phone, {"store": location, "name": "SEP001122334455"})["status"]
    assert status["lsc"]["serial"] == installed.serial and status["last_session"]["outcome"] == "succeeded"
    run(capf_phone, {"store": location, "name": "SEP00AABBCCDDEE", "authentication_mode": "auth_string",
                     "authentication_string": "55501234"})
    found = run(capf_info, {"store": location, "gather": ["phones"], "authentication_string": "55501234"})
    assert [phone["device_name"] for phone in found["phones"]] == ["SEP00AABBCCDDEE"]
    assert "55501234" not in repr(found)
    assert run(capf_info, {"store": location, "gather": ["phones"], "authentication_string": "5550"})["phones"] == []
    bad = run(capf_info, {"store": location, "limit": 0})
    assert bad["failed"] and bad["msg"] == "limit must be 1\u2013100000, got 0"


def test_stale_lsc_delete_by_device_then_all(run, location):
    _seed(location)
    checked = run(capf_stale_lsc, {"store": location, "devices": ["sep001122334455"]}, check=True, diff=True)
    assert checked["changed"] is True and len(checked["deleted"]) == 1
    assert len(checked["diff"]["before"]["stale_lscs"]) == 1 and checked["diff"]["after"]["stale_lscs"] == []
    one = run(capf_stale_lsc, {"store": location, "devices": ["sep001122334455"]})
    assert [item["device_name"] for item in one["deleted"]] == ["SEP001122334455"]
    assert run(capf_stale_lsc, {"store": location, "devices": ["sep001122334455"]})["changed"] is False
    rest = run(capf_stale_lsc, {"store": location})
    assert [item["device_name"] for item in rest["deleted"]] == ["SEP00AABBCCDDEE"]
    assert run(capf_stale_lsc, {"store": location})["changed"] is False
    assert query(location, "SELECT count(*) AS n FROM certificates WHERE status = 'stale'")[0]["n"] == 0
    assert query(location, "SELECT count(*) AS n FROM certificates WHERE status = 'installed'")[0]["n"] == 1
    bad = run(capf_stale_lsc, {"store": location, "devices": ["phone-1"]})
    assert bad["failed"] and bad["msg"].startswith("devices[0] must be SEP")


def test_phones_and_report_ordered_by_lsc_expiry(run, location, tmp_path):
    with open_store(location, actor="test") as store:
        authority.ensure(store)
        for name, not_after in (("SEP000000000001", "2030-01-01T00:00:00Z"), ("SEP000000000002", "2027-06-01T00:00:00Z"),
                                ("SEP000000000003", "2028-03-01T00:00:00Z")):
            issued = lsc.issue(store, name, ec.generate_private_key(ec.SECP256R1()).public_key())
            with store.transaction() as tx:
                certificate_records.set_status(tx, "test", issued.id, "installed")
                tx.execute("UPDATE certificates SET not_after = ? WHERE id = ?", (not_after, issued.id))
        # a newer stale LSC is not the current one: its expiry does not count
        stale = lsc.issue(store, "SEP000000000002", ec.generate_private_key(ec.SECP256R1()).public_key())
        with store.transaction() as tx:
            certificate_records.set_status(tx, "test", stale.id, "stale", reason=STALE)
    run(capf_phone, {"store": location, "name": "SEP000000000004"})  # no LSC: listed first
    report = tmp_path / "by-expiry.csv"
    info = run(capf_info, {"store": location, "gather": ["phones"], "order_by": "lsc_expiry",
                           "report_path": str(report)}, check=True)
    expected = ["SEP000000000004", "SEP000000000002", "SEP000000000003", "SEP000000000001"]
    assert [phone["device_name"] for phone in info["phones"]] == expected
    assert info["phones"][1]["lsc"]["not_after"] == "2027-06-01T00:00:00Z"
    assert [row["device_name"] for row in csv.DictReader(report.open())] == expected
    by_name = run(capf_info, {"store": location, "gather": ["phones"]})
    assert [phone["device_name"] for phone in by_name["phones"]] == sorted(expected)
    soon = run(capf_info, {"store": location, "gather": ["phones"], "order_by": "lsc_expiry",
                           "query": {"lsc_expires_before": "2029-01-01"}})
    assert [phone["device_name"] for phone in soon["phones"]] == ["SEP000000000002", "SEP000000000003"]
    bad = run(capf_info, {"store": location, "order_by": "expiry"})
    assert bad["failed"] and "order_by" in bad["msg"]


def _set_operation(store, name, operation):
    with store.transaction() as tx:
        change_phone(tx, name, operation=operation, reissue=True)


def _views(run, location, tmp_path, name):
    """The phone's current LSC as capf_info, capf_phone and the CSV report show it, and whether the
    ``lsc_status: installed`` query finds the phone."""
    report = tmp_path / "views.csv"
    info = run(capf_info, {"store": location, "gather": ["phones"], "query": {"names": [name]},
                           "report_path": str(report)})
    (row,) = [line for line in csv.DictReader(report.open()) if line["device_name"] == name]
    installed = run(capf_info, {"store": location, "gather": ["phones"], "query": {"lsc_status": ["installed"]}})
    return {"capf_info": info["phones"][0]["lsc"],
            "capf_phone": run(capf_phone, {"store": location, "name": name})["status"]["lsc"],
            "report": (row["lsc_status"], row["lsc_serial"], row["lsc_installed_at"]),
            "listed_as_installed": name in [phone["device_name"] for phone in installed["phones"]]}


def test_a_certificate_retrieved_by_troubleshoot_never_becomes_the_current_lsc(
        run, capf_server, ca_store, store_path, mic_ca, tmp_path):
    """Install, troubleshoot, delete and troubleshoot again over TLS with the phone simulator: every
    view shows the LSC the phone really holds, never the copy a troubleshoot session read back.
    SQLite only: the TLS service of ``capf_server`` runs on the SQLite test store."""
    location = store_path
    name = "SEP0011223344FE"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, name, mic_ca=mic_ca)
    assert run_enrol(identity, capf_server).outcome == "ok"
    lsc_view = _views(run, location, tmp_path, name)["capf_info"]
    assert lsc_view["status"] == "installed" and lsc_view["installed_at"]
    time.sleep(1.1)  # the fetch falls in a later second than the install: installed_at must keep the install's
    _set_operation(ca_store, name, "troubleshoot")
    assert run_enrol(identity, capf_server).fetched == 2
    assert _views(run, location, tmp_path, name) == {
        "capf_info": lsc_view, "capf_phone": lsc_view, "listed_as_installed": True,
        "report": ("installed", lsc_view["serial"], lsc_view["installed_at"])}
    _set_operation(ca_store, name, "delete")
    assert run_enrol(identity, capf_server).outcome == "ok" and identity.lsc is None
    for operation in ("none", "troubleshoot"):  # after the delete, and after reading the phone (its MIC) again
        if operation == "troubleshoot":
            _set_operation(ca_store, name, operation)
            assert run_enrol(identity, capf_server).fetched == 1
        views = _views(run, location, tmp_path, name)
        assert views["capf_info"] == views["capf_phone"] == dict(lsc_view, status="revoked"), operation
        assert views["report"] == ("revoked", lsc_view["serial"], lsc_view["installed_at"]), operation
        assert views["listed_as_installed"] is False, operation
    with ca_store.read() as tx:
        copies = tx.query("SELECT kind, status, installed_at FROM certificates WHERE source = 'troubleshoot'")
    assert sorted(copies, key=lambda row: row["kind"]) == [
        {"kind": "retrieved_lsc", "status": "retrieved", "installed_at": None},
        {"kind": "retrieved_mic", "status": "retrieved", "installed_at": None}]


def test_html_report_of_the_selected_phones(run, location, tmp_path):
    """report_format html writes the page of the phones O(query) selects (check mode too); csv stays
    the default; an unknown format fails naming the option."""
    installed, stale = _seed(location)
    report = tmp_path / "report.html"
    info = run(capf_info, {"store": location, "gather": ["phones"], "report_path": str(report),
                           "report_format": "html", "query": {"names": ["SEP001122334455"]}}, check=True)
    assert info["changed"] is False and info["report_path"] == str(report)
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "default-src 'none'" in page
    assert installed.serial in page and stale.serial in page and "SEP00AABBCCDDEE" not in page
    assert "Stale LSCs: 1" in page and "Pending CSRs: 0" in page
    default = tmp_path / "report.csv"
    run(capf_info, {"store": location, "gather": ["phones"], "report_path": str(default)})
    assert default.read_text().startswith("device_name,description,")
    refused = run(capf_info, {"store": location, "report_path": str(tmp_path / "x"), "report_format": "pdf"})
    assert refused["failed"] and "report_format" in refused["msg"]


def test_query_by_certificate_operation_and_lock_out(run, location):
    """The query's ``certificate_operation`` and ``locked`` filters, through the module's argument spec."""
    with open_store(location, actor="test") as store:
        add_phone(store, "SEP0000000000D1", operation="install_upgrade", locked=1, auth_failures=5)
        add_phone(store, "SEP0000000000D2", operation="delete")
        add_phone(store, "SEP0000000000D3")

    def names(query):
        info = run(capf_info, {"store": location, "gather": ["phones"], "query": query})
        return [item["device_name"] for item in info["phones"]]

    assert names({"locked": True}) == ["SEP0000000000D1"]
    assert names({"locked": False}) == ["SEP0000000000D2", "SEP0000000000D3"]
    assert names({"certificate_operation": ["delete", "none"]}) == ["SEP0000000000D2", "SEP0000000000D3"]
    assert names({"certificate_operation": ["install_upgrade"], "locked": False}) == []
    assert names({}) == ["SEP0000000000D1", "SEP0000000000D2", "SEP0000000000D3"]
    refused = run(capf_info, {"store": location, "query": {"certificate_operation": ["renew"]}})
    assert refused["failed"] and "certificate_operation" in refused["msg"]


def test_an_lsc_past_its_notafter_is_expired_in_capf_info_capf_phone_and_their_queries(run, location, tmp_path):
    """Before the scheduler revokes it (if ever: revoke_after_expiry), an LSC whose notAfter has passed
    is reported and queried as expired, not as installed; the documented "no installed LSC" check
    finds its phone."""
    now = time.time()
    days = {"SEP0000000E0001": ("installed", -2), "SEP0000000E0002": ("installed", 2),
            "SEP0000000E0003": ("issued", -1), "SEP0000000E0004": ("revoked", -2)}
    with open_store(location, actor="test") as store:
        authority.ensure(store)
        for name, (status, offset) in days.items():
            issued = lsc.issue(store, name, ec.generate_private_key(ec.SECP256R1()).public_key())
            not_after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + offset * 86400))
            with store.transaction() as tx:
                if status == "revoked":
                    certificate_records.revoke(tx, "test", issued.id, name, "unspecified")
                elif status != "issued":
                    certificate_records.set_status(tx, "test", issued.id, status)
                tx.execute("UPDATE certificates SET not_after = ? WHERE id = ?", (not_after, issued.id))
    report = tmp_path / "expired.csv"
    info = run(capf_info, {"store": location, "gather": ["phones"], "report_path": str(report)})
    expected = {"SEP0000000E0001": "expired", "SEP0000000E0002": "installed", "SEP0000000E0003": "expired",
                "SEP0000000E0004": "revoked"}
    assert {phone["device_name"]: phone["lsc"]["status"] for phone in info["phones"]} == expected
    assert {row["device_name"]: row["lsc_status"] for row in csv.DictReader(report.open())} == expected
    assert run(capf_phone, {"store": location, "name": "SEP0000000E0001"})["status"]["lsc"]["status"] == "expired"
    for statuses, names in ((["installed"], ["SEP0000000E0002"]), (["expired"], ["SEP0000000E0001", "SEP0000000E0003"]),
                            (["none", "issued", "revoked", "expired"],
                             ["SEP0000000E0001", "SEP0000000E0003", "SEP0000000E0004"])):
        found = run(capf_info, {"store": location, "gather": ["phones"], "query": {"lsc_status": statuses}})
        assert [phone["device_name"] for phone in found["phones"]] == names, statuses

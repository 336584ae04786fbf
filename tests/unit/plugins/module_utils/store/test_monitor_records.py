"""The certificate monitor's store operations, on both backends: warnings sent once per certificate and
threshold, runs kept and read back, and the expiry queries of LSCs, CAPF certificates and trust stores."""

from __future__ import annotations

from support import pki
from support.protocol import add_phone
from _opencapf.ca import authority
from _opencapf.store import capf_certificates, certificates, trust
from _opencapf.store import monitor as records


def test_warnings_are_recorded_once_per_certificate_and_threshold(store):
    with store.transaction() as tx:
        assert records.warned(tx, ["aa", "bb"]) == set()
        records.record_warnings(tx, [("aa", 30, "lsc", "SEP001122334455", "2027-01-01T00:00:00Z"),
                                     ("aa", 7, "lsc", "SEP001122334455", "2027-01-01T00:00:00Z")], "2026-12-01T00:00:00Z")
        # The same pair again (every_check resends): one row, its time moves on.
        records.record_warnings(tx, [("aa", 7, "lsc", "SEP001122334455", "2027-01-01T00:00:00Z"),
                                     ("bb", 0, "capf-trust", "Root", "2026-01-01T00:00:00Z")], "2026-12-25T00:00:00Z")
    with store.read() as tx:
        assert records.warned(tx, ["aa", "bb", "cc"]) == {("aa", 30), ("aa", 7), ("bb", 0)}
        assert records.warned(tx, [f"x{i}" for i in range(1200)] + ["bb"]) == {("bb", 0)}  # chunked IN lists
        sent = records.sent_warnings(tx)
    assert [(row["fingerprint"], row["threshold"], row["sent_at"]) for row in sent] == [
        ("aa", 7, "2026-12-25T00:00:00Z"), ("bb", 0, "2026-12-25T00:00:00Z"), ("aa", 30, "2026-12-01T00:00:00Z")]
    with store.transaction() as tx:
        assert records.forget_warnings(tx, "2026-06-01T00:00:00Z") == 1
        assert records.warned(tx, ["aa", "bb"]) == {("aa", 30), ("aa", 7)}


def test_runs_are_recorded_and_the_newest_are_kept(store, monkeypatch):
    monkeypatch.setattr(records, "RUNS_KEPT", 3)
    with store.read() as tx:
        assert records.last_run(tx) is None and records.last_success(tx) is None
    with store.transaction() as tx:
        for day, result in ((1, "sent"), (2, "nothing_due"), (3, "failed"), (4, "failed")):
            records.record_run(tx, checked_at=f"2026-12-0{day}T00:00:00Z", finished_at=f"2026-12-0{day}T00:00:01Z",
                               result=result, found=2, warnings=1, mails_sent=int(result == "sent"), attempts=3,
                               failures=day - 2 if result == "failed" else 0, error="boom" if result == "failed" else "")
    with store.read() as tx:
        last = records.last_run(tx)
        assert last["checked_at"] == "2026-12-04T00:00:00Z" and last["result"] == "failed"
        assert last["failures"] == 2 and last["error"] == "boom" and last["attempts"] == 3
        assert records.last_success(tx)["checked_at"] == "2026-12-02T00:00:00Z"
        assert tx.scalar("SELECT COUNT(*) FROM monitor_runs") == 3


def test_expiry_queries_find_what_expires_before_a_time(store, tmp_path):
    capf = authority.ensure(store)[0]
    root, _key = pki.make_cert("Soon Root", days=10)
    phone = add_phone(store, "SEP001122334455", model="CP-8865", device_pool="HQ")
    with store.transaction() as tx:
        trust.add(tx, trust_store="callmanager-trust", fingerprint="f" * 64, subject="CN=Soon Root",
                  common_name="Soon Root", issuer="CN=Soon Root", is_ca=True, not_after="2026-12-20T00:00:00Z",
                  description="", pem=pki.pem(root))
        for serial, status, not_after in (("01", "installed", "2026-12-15T00:00:00Z"),
                                          ("02", "revoked", "2026-12-10T00:00:00Z"),
                                          ("03", "issued", "2026-12-11T00:00:00Z")):
            certificates.insert(tx, phone_id=phone["id"], kind="lsc", serial=serial, issuer="CN=x",
                                fingerprint=serial * 32, public_key_fingerprint="k" * 64, status=status,
                                source="capf", pem="-", not_before="2026-01-01T00:00:00Z", not_after=not_after)
    with store.read() as tx:
        lscs = certificates.watched_lscs_expiring(tx, "2026-12-16T00:00:00Z", "2026-01-01T00:00:00Z")
        assert [(row["serial"], row["device_name"], row["model"], row["device_pool"]) for row in lscs] == [
            ("01", "SEP001122334455", "CP-8865", "HQ")]
        assert certificates.watched_lscs_expiring(tx, "2026-12-15T00:00:00Z", "2026-01-01T00:00:00Z") == []
        assert [row["common_name"] for row in trust.expiring(tx, "2026-12-21T00:00:00Z")] == ["Soon Root"]
        assert trust.expiring(tx, "2026-12-19T00:00:00Z") == []
        far = capf_certificates.expiring(tx, "2100-01-01T00:00:00Z")
        assert [(row["fingerprint"], row["active"]) for row in far] == [(capf["fingerprint"], 1)]
        assert capf_certificates.expiring(tx, capf["not_after"]) == []

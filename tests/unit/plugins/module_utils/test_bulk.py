"""Bulk jobs at fleet scale, the scheduler, and the jobs CLI verb, against a real store."""

from __future__ import annotations

import json

import pytest

from support.store_phones import change_phone
from support.tools import run_cli

from _opencapf import bulk, phone_config, scheduler, secretbox

FLEET = 40000


@pytest.fixture
def store(store_on_both):
    """Every test here runs against both backends."""
    return store_on_both


def _csv(count: int) -> str:
    lines = ["device_name,device_pool,model,certificate_operation,authentication_mode"]
    lines += [f"SEP{index:012X},{'HQ' if index % 4 else 'Branch'},Cisco 8845,none,null_string" for index in range(count)]
    return "\n".join(lines) + "\n"


def test_forty_thousand_phones_converge_in_one_job(store):
    inserted = bulk.converge(store, csv_content=_csv(FLEET))
    assert inserted["counts"] == {"matched": 0, "changed": 0, "unchanged": 0, "inserted": FLEET}
    job = dict(query={"model": ["Cisco 8845"]},
               settings={"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
                         "key_order": "ec"},
               generate_authentication_strings=True)
    checked = bulk.converge(store, check_mode=True, **job)
    assert checked["counts"]["changed"] == FLEET and {item["authentication_string"] for item in checked[
        "authentication_strings"]} == {"(to be generated)"} and len(checked["authentication_strings"]) == FLEET
    applied = bulk.converge(store, **job)
    assert applied["counts"] == {"matched": FLEET, "changed": FLEET, "unchanged": 0, "inserted": 0}
    strings = {item["authentication_string"] for item in applied["authentication_strings"]}
    assert len(applied["authentication_strings"]) == FLEET and len(strings) > FLEET * 0.99
    again = bulk.converge(store, **job)
    assert again["changed"] is False and again["counts"]["unchanged"] == FLEET
    with store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM phones WHERE operation_status = 'pending' AND key_order = 'ec' "
                         "AND auth_hash IS NOT NULL") == FLEET
        assert tx.scalar("SELECT count(*) FROM audit_events WHERE action = 'phone.update'") == FLEET


def test_failure_on_one_phone_changes_nothing(store):
    bulk.converge(store, csv_content=_csv(10))
    with store.transaction() as tx:
        change_phone(tx, "SEP000000000007", security_mode="authenticated")
    try:
        bulk.converge(store, query={}, settings={"certificate_operation": "install_upgrade",
                                                 "authentication_mode": "auth_string"},
                      authentication_string="2468")
    except Exception as exc:  # noqa: BLE001 - the message is what matters
        assert str(exc).startswith("phone SEP000000000007: authentication_mode must not be auth_string")
    else:
        raise AssertionError("the job should have failed")
    with store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM phones WHERE operation != 'none'") == 0


def test_scheduled_secret_is_encrypted_and_removed_after_the_run(store):
    bulk.converge(store, csv_content=_csv(3))
    job = bulk.converge(store, query={}, settings={"certificate_operation": "install_upgrade",
                                                   "authentication_mode": "auth_string"},
                        authentication_string="13579", run_at="2099-05-01T00:00:00Z")["job"]
    with store.read() as tx:
        spec = tx.scalar("SELECT spec FROM jobs WHERE id = ?", (job["id"],))
        ciphertext = bytes(tx.scalar("SELECT ciphertext FROM secrets"))
    assert "13579" not in spec and b"13579" not in ciphertext
    changed_secret = bulk.converge(store, query={}, settings={"certificate_operation": "install_upgrade",
                                                              "authentication_mode": "auth_string"},
                                   authentication_string="97531", run_at="2099-05-01T00:00:00Z")
    assert changed_secret["changed"] is True and changed_secret["job"]["id"] == job["id"]
    result = scheduler.run_due(store, "2099-05-01T00:00:01Z")
    assert result["jobs"][0]["status"] == "succeeded"
    with store.read() as tx:
        assert not secretbox.exists(tx, f"job.{job['id']}.authentication_string")
        row = tx.one("SELECT auth_salt, auth_hash FROM phones WHERE name = 'SEP000000000001'")
    from _opencapf import authstrings
    assert authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], "97531")


def test_deadlines_lapse(store):
    declared = {"certificate_operation": "install_upgrade", "operation_completes_by": "2030-01-01"}
    phone_config.converge(store, "SEP000000000001", settings=declared)
    assert scheduler.run_due(store, "2029-12-31T23:59:59Z")["lapsed"] == []
    assert scheduler.run_due(store, "2030-01-01T00:00:01Z")["lapsed"] == ["SEP000000000001"]
    again = phone_config.converge(store, "SEP000000000001", settings=declared)
    assert again["changed"] is False
    assert again["status"]["operation_status"] == "lapsed" and again["status"]["operation_reason"] == "deadline passed"


def test_jobs_cli(store_options, store):
    bulk.converge(store, csv_content=_csv(2))
    # A job declared (``now``) before its time, which has come since: ``--now`` acts as at a time the clock has reached.
    bulk.converge(store, query={}, settings={"key_order": "ec"}, run_at="2020-01-01T00:00:00Z",
                  now="2019-12-01T00:00:00Z")
    listed = run_cli(*store_options, "--json", "jobs", "list", check=True)
    assert json.loads(listed.stdout)[0]["status"] == "scheduled"
    nothing = run_cli(*store_options, "jobs", "run-due", "--now", "2019-12-31T23:59:59Z", check=True)
    assert nothing.stdout.strip() == "nothing due at 2019-12-31T23:59:59Z"
    ran = run_cli(*store_options, "--json", "jobs", "run-due", "--now", "2020-01-01T00:00:00Z", check=True)
    assert json.loads(ran.stdout)["jobs"][0]["result"]["counts"]["changed"] == 2
    later = bulk.converge(store, query={}, settings={"key_order": "rsa"}, run_at="2099-06-01T00:00:00Z")["job"]
    cancelled = run_cli(*store_options, "jobs", "cancel", str(later["id"]), check=True)
    assert cancelled.stdout.strip() == f"job {later['id']} cancelled"
    again = run_cli(*store_options, "jobs", "cancel", str(later["id"]), check=True)
    assert again.stdout.strip() == f"job {later['id']} is cancelled"
    missing = run_cli(*store_options, "jobs", "cancel", "999")
    assert missing.returncode == 1 and missing.stderr.strip() == "opencapf: error: job 999 does not exist"
    assert scheduler.run_due(store, "2099-07-01T00:00:00Z")["jobs"] == []

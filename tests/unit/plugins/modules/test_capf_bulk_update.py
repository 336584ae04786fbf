"""capf_bulk_update: query + set, generated strings, CSV import, scheduled jobs."""

from __future__ import annotations

import os
import stat

from ansible_collections.opencapf.capf.plugins.modules import capf_bulk_update, capf_info

from _opencapf import authstrings, scheduler
from _opencapf.store import open_store
from support.stores import query, store_exists

HEADER = "device_name,device_pool,model,certificate_operation,authentication_mode,authentication_string\n"


def _csv(tmp_path, lines, name="phones.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return str(path)


def _phones(location):
    return {row["name"]: row for row in query(location, "SELECT * FROM phones")}


def _fleet(run, location, tmp_path, count=30):
    lines = [f"SEP{index:012X},{'HQ' if index % 2 else 'Branch'},Cisco 8845,none,null_string," for index in range(count)]
    return run(capf_bulk_update, {"store": location, "csv_file": _csv(tmp_path, lines)})


def test_csv_insert_check_run_idempotent(run, location, tmp_path):
    lines = [f"SEP{index:012X},HQ,Cisco 8845,install_upgrade,null_string," for index in range(5)]
    args = {"store": location, "csv_file": _csv(tmp_path, lines)}
    checked = run(capf_bulk_update, args, check=True, diff=True)
    assert checked["changed"] is True and checked["counts"]["inserted"] == 5
    assert checked["diff"]["before"] == {"phones": {"SEP000000000000": None, "SEP000000000001": None,
                                                    "SEP000000000002": None, "SEP000000000003": None,
                                                    "SEP000000000004": None}}
    assert not store_exists(location)
    first = run(capf_bulk_update, args)
    assert first["counts"] == {"matched": 0, "changed": 0, "unchanged": 0, "inserted": 5}
    assert _phones(location)["SEP000000000003"]["operation_status"] == "pending"
    second = run(capf_bulk_update, args)
    assert second["changed"] is False
    assert second["counts"] == {"matched": 5, "changed": 0, "unchanged": 5, "inserted": 0}


def test_csv_reports_every_bad_row_and_imports_nothing(run, location, tmp_path):
    lines = ["SEP000000000001,HQ,Cisco 8845,install_upgrade,null_string,",
             "SEP0000,HQ,Cisco 8845,install_upgrade,null_string,",
             "SEP000000000002,HQ,Cisco 8845,reinstall,null_string,",
             "SEP000000000003,HQ,Cisco 8845,install_upgrade,auth_string,12",
             "SEP000000000001,HQ,Cisco 8845,none,null_string,"]
    result = run(capf_bulk_update, {"store": location, "csv_file": _csv(tmp_path, lines)})
    assert result["failed"]
    message = result["msg"]
    assert message.startswith("csv_file has 4 bad rows, nothing was imported: line 3: device_name must be SEP")
    assert "line 4: certificate_operation must be one of none, install_upgrade, delete, troubleshoot, got 'reinstall'" \
        in message
    assert "line 5: authentication_string must be 4\u201310 digits" in message
    assert "line 6: device_name repeats line 2" in message
    assert _phones(location) == {}
    header = tmp_path / "bad-header.csv"
    header.write_text("name,pool\nSEP000000000001,HQ\n")
    result = run(capf_bulk_update, {"store": location, "csv_file": str(header)})
    assert result["failed"] and result["msg"].startswith("csv_file header must name device_name and only known columns")


def test_query_set_generate_strings_file(run, location, tmp_path):
    _fleet(run, location, tmp_path)
    strings = tmp_path / "strings.csv"
    args = {"store": location, "query": {"device_pool": ["HQ"]},
            "set": {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string"},
            "generate_authentication_strings": True, "strings_file": str(strings)}
    checked = run(capf_bulk_update, args, check=True, diff=True)
    assert checked["counts"] == {"matched": 15, "changed": 15, "unchanged": 0, "inserted": 0}
    assert {item["authentication_string"] for item in checked["authentication_strings"]} == {"(to be generated)"}
    assert not strings.exists()
    assert checked["diff"]["after"]["phones"]["SEP000000000001"]["certificate_operation"] == "install_upgrade"
    assert checked["diff"]["before"]["phones"]["SEP000000000001"]["certificate_operation"] == "none"
    first = run(capf_bulk_update, args)
    assert first["counts"]["changed"] == 15 and len(first["authentication_strings"]) == 15
    assert stat.S_IMODE(os.stat(strings).st_mode) == 0o600
    written = strings.read_text().splitlines()
    assert written[0] == "device_name,authentication_string" and len(written) == 16
    phones = _phones(location)
    with open_store(location) as store:
        for item in first["authentication_strings"]:
            row = phones[item["device_name"]]
            assert authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], item["authentication_string"])
    assert phones["SEP000000000000"]["operation"] == "none"  # Branch was not matched
    second = run(capf_bulk_update, args)
    assert second["changed"] is False and second["authentication_strings"] == []
    assert second["counts"] == {"matched": 15, "changed": 0, "unchanged": 15, "inserted": 0}


def test_query_filters_and_bad_values(run, location, tmp_path):
    _fleet(run, location, tmp_path)
    result = run(capf_bulk_update, {"store": location, "query": {"name_pattern": "sep00000000000?"},
                                    "set": {"key_order": "ec"}})
    assert result["counts"]["matched"] == 16  # 0-9 and A-F
    query = {"names": ["SEP000000000001", "sep000000000002"], "lsc_status": ["none"]}
    result = run(capf_bulk_update, {"store": location, "query": query, "set": {"ec_key_size": 384}})
    assert result["counts"]["matched"] == 2
    result = run(capf_bulk_update, {"store": location, "query": {"lsc_expires_before": "2027-13-01"},
                                    "set": {"key_order": "ec"}})
    assert result["failed"] and result["msg"].startswith("query.lsc_expires_before must be an ISO 8601 date")
    result = run(capf_bulk_update, {"store": location, "query": {}, "set": {"operation_completes_by": "soon"}})
    assert result["failed"] and result["msg"].startswith("set.operation_completes_by must be an ISO 8601 date")
    result = run(capf_bulk_update, {"store": location, "query": {"device_pool": ["HQ"]},
                                    "set": {"security_mode": "encrypted", "certificate_operation": "install_upgrade",
                                            "authentication_mode": "auth_string"},
                                    "authentication_string": "123456"})
    assert result["failed"] and "must not be auth_string for a phone in security_mode encrypted" in result["msg"]
    assert "123456" not in repr(result)
    assert all(row["security_mode"] == "non_secure" for row in _phones(location).values())


def test_shared_string(run, location, tmp_path):
    _fleet(run, location, tmp_path, 4)
    args = {"store": location, "query": {}, "authentication_string": "98765",
            "set": {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string"}}
    first = run(capf_bulk_update, args)
    assert first["counts"]["changed"] == 4 and "98765" not in repr(first)
    assert run(capf_bulk_update, args)["changed"] is False
    with open_store(location) as store:
        for row in _phones(location).values():
            assert authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], "98765")


def test_scheduled_job(run, location, tmp_path):
    _fleet(run, location, tmp_path, 6)
    args = {"store": location, "query": {"device_pool": ["Branch"]}, "run_at": "2099-01-01T02:00:00Z",
            "set": {"certificate_operation": "install_upgrade"}}
    checked = run(capf_bulk_update, args, check=True)
    assert checked["changed"] is True and checked["job"]["id"] is None
    first = run(capf_bulk_update, args)
    assert first["changed"] is True and first["job"]["status"] == "scheduled" and first["counts"] is None
    assert run(capf_bulk_update, args)["changed"] is False
    assert all(row["operation"] == "none" for row in _phones(location).values())
    with open_store(location, actor="scheduler") as store:
        assert scheduler.run_due(store, "2098-12-31T00:00:00Z")["jobs"] == []
        ran = scheduler.run_due(store, "2099-01-01T02:00:00Z")
    assert ran["jobs"][0]["status"] == "succeeded"
    assert ran["jobs"][0]["result"]["counts"] == {"matched": 3, "changed": 3, "unchanged": 0, "inserted": 0}
    info = run(capf_info, {"store": location, "gather": ["jobs"]})
    assert info["jobs"][0]["status"] == "succeeded" and info["jobs"][0]["result"]["counts"]["changed"] == 3
    pending = [name for name, row in _phones(location).items() if row["operation_status"] == "pending"]
    assert len(pending) == 3
    refused = run(capf_bulk_update, dict(args, generate_authentication_strings=True,
                                         set={"authentication_mode": "auth_string"}))
    assert refused["failed"] and refused["msg"].startswith("strings_file is required when a scheduled job generates")


def test_csv_refuses_job_wide_strings_it_would_not_use(run, location, tmp_path):
    """The CSV carries each phone's string (digits, or generate): a job-wide string or generation
    flag next to it is refused, not silently left unused."""
    csv_file = _csv(tmp_path, ["SEP000000000001,HQ,Cisco 8845,install_upgrade,auth_string,"])
    for option, value in (("authentication_string", "2468"), ("generate_authentication_strings", True)):
        result = run(capf_bulk_update, {"store": location, "csv_file": csv_file, option: value})
        assert result["failed"] and result["msg"].startswith(f"csv_file cannot be combined with {option} ")
    assert not store_exists(location) or _phones(location) == {}


def test_a_scheduled_job_declared_again_without_its_string_keeps_it(run, location, tmp_path):
    """A playbook that schedules a job with a ``no_log`` string and is run again without repeating it
    (the string comes from a vault only the first run had): the re-run, in check mode and for real,
    reports no change, and the job gives the phones the string of the first run."""
    _fleet(run, location, tmp_path, 4)
    args = {"store": location, "query": {"device_pool": ["Branch"]}, "run_at": "2099-01-01T02:00:00Z",
            "set": {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string"}}
    first = run(capf_bulk_update, dict(args, authentication_string="97531"))
    assert first["changed"] is True and "97531" not in repr(first)
    assert run(capf_bulk_update, args, check=True)["changed"] is False
    again = run(capf_bulk_update, args)
    assert again["changed"] is False and again["job"]["id"] == first["job"]["id"]
    with open_store(location, actor="scheduler") as store:
        ran = scheduler.run_due(store, "2099-01-01T02:00:00Z")
    assert [(job["id"], job["status"]) for job in ran["jobs"]] == [(first["job"]["id"], "succeeded")], ran
    with open_store(location) as store:
        branch = [row for row in _phones(location).values() if row["device_pool"] == "Branch"]
        assert branch and all(authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], "97531")
                              for row in branch)


def test_run_at_with_a_fraction_of_a_second_is_refused(run, location, tmp_path):
    """``run_at`` is kept to the second: a fraction of a second fails the task naming the option and
    the rule, and no job is stored."""
    _fleet(run, location, tmp_path, 2)
    result = run(capf_bulk_update, {"store": location, "query": {}, "set": {"description": "later"},
                                    "run_at": "2099-01-01T02:00:00.250Z"})
    assert result["failed"] and result["msg"].startswith("run_at must be a whole second"), result["msg"]
    assert query(location, "SELECT id FROM jobs") == []

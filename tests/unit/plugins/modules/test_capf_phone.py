"""capf_phone: argument handling, check/diff, idempotence, authentication strings, domain rules."""

from __future__ import annotations

from ansible_collections.opencapf.capf.plugins.modules import capf_phone

from _opencapf import authstrings
from _opencapf.store import open_store
from support.stores import execute, query, store_exists

INSTALL = {"name": "sep001122334455", "certificate_operation": "install_upgrade", "description": "Reception",
           "device_pool": "HQ", "key_order": "ec_preferred"}


def _row(location, name="SEP001122334455"):
    rows = query(location, "SELECT * FROM phones WHERE name = ?", (name,))
    return rows[0] if rows else None


def test_check_mode_then_run_then_unchanged(run, location):
    args = dict(INSTALL, store=location)
    checked = run(capf_phone, args, check=True, diff=True)
    assert checked["changed"] is True and not checked["failed"]
    assert checked["diff"]["before"] == {}
    assert checked["diff"]["after"]["certificate_operation"] == "install_upgrade"
    assert not store_exists(location), "check mode must not even create the store"

    first = run(capf_phone, args, diff=True)
    assert first["changed"] is True
    assert first["name"] == "SEP001122334455"
    assert first["status"]["operation_status"] == "pending"
    assert first["status"]["lsc"] is None
    assert _row(location)["key_order"] == "ec_preferred"

    second = run(capf_phone, args, diff=True)
    assert second["changed"] is False
    assert second["diff"]["before"] == second["diff"]["after"]


def test_diff_shows_only_the_change(run, location):
    run(capf_phone, dict(INSTALL, store=location))
    result = run(capf_phone, dict(INSTALL, store=location, device_pool="Branch"), check=True, diff=True)
    assert result["changed"] is True
    assert result["diff"]["before"]["device_pool"] == "HQ"
    assert result["diff"]["after"]["device_pool"] == "Branch"
    assert _row(location)["device_pool"] == "HQ"
    assert "diff" not in run(capf_phone, dict(INSTALL, store=location))


def test_generated_string_returned_once_and_stored_as_hash(run, location):
    args = dict(INSTALL, store=location, authentication_mode="auth_string", generate_authentication_string=True)
    checked = run(capf_phone, args, check=True)
    assert checked["authentication_string"] == "(to be generated)"  # the string itself only when generated
    first = run(capf_phone, args)
    generated = first["authentication_string"]
    assert generated.isdigit() and len(generated) == 8
    row = _row(location)
    assert generated.encode() not in bytes(row["auth_hash"]) and row["auth_salt"]
    with open_store(location) as store:
        assert authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], generated)
    second = run(capf_phone, args)
    assert second["changed"] is False and "authentication_string" not in second
    renewed = run(capf_phone, dict(args, regenerate_authentication_string=True))
    assert renewed["changed"] is True and renewed["authentication_string"].isdigit()
    assert _row(location)["auth_hash"] != row["auth_hash"]


def test_operation_change_generates_a_new_string(run, location):
    args = dict(INSTALL, store=location, authentication_mode="auth_string", generate_authentication_string=True)
    first = run(capf_phone, args)["authentication_string"]
    hash_before = _row(location)["auth_hash"]
    result = run(capf_phone, dict(args, certificate_operation="delete"))
    assert result["changed"] is True and "authentication_string" in result
    assert _row(location)["auth_hash"] != hash_before
    assert result["status"]["operation"] == "delete" and result["status"]["operation_status"] == "pending"
    assert first  # the first string is now useless


def test_literal_string_is_idempotent_and_never_echoed(run, location, capsys):
    args = dict(INSTALL, store=location, authentication_mode="auth_string", authentication_string="4711081512")
    first = run(capf_phone, args, diff=True)
    assert first["changed"] is True
    assert "4711081512" not in repr(first)
    assert first["diff"]["after"]["authentication_string"] == "(new)"
    assert run(capf_phone, args)["changed"] is False
    changed = run(capf_phone, dict(args, authentication_string="1234"), diff=True)
    assert changed["changed"] is True and changed["diff"]["after"]["authentication_string"] == "(changed)"


def test_bad_values_fail_with_the_rule(run, location):
    bad_name = run(capf_phone, {"store": location, "name": "SEP0011"})
    assert bad_name["failed"] and bad_name["msg"].startswith("name must be SEP")
    short = run(capf_phone, dict(INSTALL, store=location, authentication_mode="auth_string",
                                 authentication_string="12"))
    assert short["failed"] and short["msg"] == "authentication_string must be 4\u201310 digits"
    deadline = run(capf_phone, dict(INSTALL, store=location, operation_completes_by="tomorrow"))
    assert deadline["failed"] and "operation_completes_by must be an ISO 8601 date" in deadline["msg"]
    missing = run(capf_phone, dict(INSTALL, store=location, authentication_mode="auth_string"))
    assert missing["failed"] and "authentication_string is required when authentication_mode is auth_string" \
        in missing["msg"]
    choice = run(capf_phone, dict(INSTALL, store=location, key_order="dsa"))
    assert choice["failed"] and "key_order" in choice["msg"]
    assert _row(location) is None


def test_auth_string_on_secure_phone_is_refused(run, location):
    result = run(capf_phone, dict(INSTALL, store=location, security_mode="encrypted",
                                  authentication_mode="auth_string", generate_authentication_string=True))
    assert result["failed"]
    assert result["msg"].startswith("authentication_mode must not be auth_string for a phone in security_mode encrypted")
    ok = run(capf_phone, dict(INSTALL, store=location, security_mode="encrypted",
                              authentication_mode="existing_cert_mic"))
    assert ok["changed"] is True and not ok["failed"]


def test_finished_operations_are_armed_again_only_on_request(run, location):
    run(capf_phone, dict(INSTALL, store=location))
    # A session's result, written directly: the module under test has no path that ends an operation.
    execute(location, "UPDATE phones SET operation_status = 'failed', operation_reason = 'key generation failed'")
    assert run(capf_phone, dict(INSTALL, store=location))["changed"] is False
    rearmed = run(capf_phone, dict(INSTALL, store=location, operation_completes_by="2030-01-01"))
    assert rearmed["changed"] is True and rearmed["status"]["operation_status"] == "pending"
    assert rearmed["status"]["operation_reason"] == ""
    assert rearmed["status"]["operation_completes_by"] == "2030-01-01T00:00:00Z"
    execute(location, "UPDATE phones SET operation_status = 'succeeded'")  # a session's result, as above
    assert run(capf_phone, dict(INSTALL, store=location))["changed"] is False
    again = run(capf_phone, dict(INSTALL, store=location, reissue=True))
    assert again["changed"] is True and again["status"]["operation_status"] == "pending"
    assert run(capf_phone, dict(INSTALL, store=location, reissue=True))["changed"] is False


def test_absent(run, location):
    run(capf_phone, dict(INSTALL, store=location))
    checked = run(capf_phone, {"store": location, "name": "SEP001122334455", "state": "absent"}, check=True)
    assert checked["changed"] is True and _row(location) is not None
    removed = run(capf_phone, {"store": location, "name": "SEP001122334455", "state": "absent"}, diff=True)
    assert removed["changed"] is True and removed["diff"]["after"] == {}
    assert _row(location) is None
    assert run(capf_phone, {"store": location, "name": "SEP001122334455", "state": "absent"})["changed"] is False

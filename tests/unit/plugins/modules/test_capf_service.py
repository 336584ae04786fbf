"""capf_service: parameters, online CA rules and password, CAPF certificate, service state."""

from __future__ import annotations

import json

from support import certfactory
from ansible_collections.opencapf.capf.plugins.modules import capf_info, capf_service, capf_trust_cert
from support.stores import query, store_exists

EST = {"hostname": "ca.example.com", "type": "est", "profile_label": "phones", "username": "capf",
       "password": "S3cret-pass"}


def _count(location, sql):
    return next(iter(query(location, sql)[0].values()))


def test_parameters_check_run_idempotent_diff(run, location):
    args = {"store": location, "validity_days": 730, "keepalive_minutes": 20, "key_order": "ec",
            "listen_addresses": ["127.0.0.1"]}
    checked = run(capf_service, args, check=True, diff=True)
    assert checked["changed"] is True
    assert checked["diff"]["before"]["parameters"]["validity_days"] == 1825
    assert checked["diff"]["after"]["parameters"]["validity_days"] == 730
    assert checked["capf_certificate_action"] == "create"
    assert not store_exists(location), "check mode must not create the store"

    first = run(capf_service, args)
    assert first["changed"] is True
    assert first["parameters"]["keepalive_minutes"] == 20
    assert sorted(first["changed_parameters"]) == ["keepalive_minutes", "key_order", "listen_addresses", "validity_days"]
    assert first["capf_certificate"]["common_name"].startswith("CAPF-")
    second = run(capf_service, args, diff=True)
    assert second["changed"] is False and second["capf_certificate_action"] == "none"
    assert second["diff"]["before"] == second["diff"]["after"]


def test_out_of_range_values_name_the_option_and_rule(run, location):
    result = run(capf_service, {"store": location, "validity_days": 2000})
    assert result["failed"] and result["msg"] == "validity_days must be 1\u20131825 days, got 2000"
    result = run(capf_service, {"store": location, "keepalive_minutes": 4})
    assert result["failed"] and result["msg"] == "keepalive_minutes must be 5\u201360 minutes, got 4"
    result = run(capf_service, {"store": location, "listen_addresses": ["not-an-ip"]})
    assert result["failed"] and result["msg"].startswith("listen_addresses[0] must be an IPv4 or IPv6 address")
    assert _count(location, "SELECT count(*) FROM capf_certificates") == 0


def test_online_ca_rules(run, location):
    bad = run(capf_service, {"store": location, "online_ca": dict(EST, template="Phones")})
    assert bad["failed"] and bad["msg"].startswith("online_ca.template is only used with type microsoft")
    bad_port = {"hostname": "ca.example.com", "type": "est", "profile_label": "x", "port": 70000}
    bad = run(capf_service, {"store": location, "online_ca": bad_port})
    assert bad["failed"] and bad["msg"].startswith("online_ca.port must be 1\u201365535")
    ms = {"hostname": "ca.example.com", "type": "microsoft", "template": "CAPF"}
    fips = run(capf_service, {"store": location, "fips_mode": True, "online_ca": ms})
    assert fips["failed"] and fips["msg"].startswith("online_ca.type must not be microsoft when fips_mode is true")
    label = run(capf_service, {"store": location, "online_ca": dict(ms, profile_label="p")})
    assert label["failed"] and label["msg"].startswith("online_ca.profile_label is only used with type est")
    needs = run(capf_service, {"store": location, "issuer": "online_ca"})
    assert needs["failed"] and needs["msg"].startswith("issuer online_ca needs the online_ca settings")


def test_online_ca_hostname_must_match_https_certificate_in_capf_trust(run, location):
    root = certfactory.make("Example Root CA")
    https, _key = certfactory.make("ca.example.com", issuer=root, ca=False, dns=["ca.example.com"])
    other_root = certfactory.make("Other Root CA")
    # Table 1 row 4: HTTPS certificate not verifiable from the root given, so both are uploaded.
    result = run(capf_trust_cert, {"store": location, "ca_root": certfactory.pem(other_root[0]),
                                   "https_certificate": certfactory.pem(https)})
    assert result["table1"]["scenario"] == 4
    wrong = run(capf_service, {"store": location, "issuer": "online_ca", "online_ca": dict(EST, hostname="ca2.example.com")})
    assert wrong["failed"]
    assert wrong["msg"] == ("online_ca.hostname must match the CN or a DNS name of the CA's HTTPS certificate in "
                            "capf-trust (ca.example.com), got 'ca2.example.com'")
    right = run(capf_service, {"store": location, "issuer": "online_ca", "online_ca": EST})
    assert right["changed"] is True and right["parameters"]["issuer"] == "online_ca"


def test_password_is_secret_and_update_password(run, location):
    first = run(capf_service, {"store": location, "online_ca": EST}, diff=True)
    assert first["changed"] is True
    assert "S3cret-pass" not in repr(first)
    assert first["online_ca"]["password"] == "(set)"
    stored = query(location, "SELECT ciphertext FROM secrets WHERE name = 'online_ca.password'")[0]["ciphertext"]
    assert b"S3cret-pass" not in bytes(stored)
    assert run(capf_service, {"store": location, "online_ca": EST})["changed"] is False
    other = dict(EST, password="another")
    assert run(capf_service, {"store": location, "online_ca": other, "update_password": "on_create"})["changed"] is False
    changed = run(capf_service, {"store": location, "online_ca": other}, diff=True)
    assert changed["changed"] is True and changed["diff"]["after"]["online_ca"]["password"] == "(changed)"
    assert run(capf_service, {"store": location, "online_ca": other})["changed"] is False


def test_capf_certificate_key_type_regenerate_and_upload(run, location):
    first = run(capf_service, {"store": location, "capf_certificate": {"key_type": "ec256"}})
    assert first["capf_certificate"]["key_type"] == "ec256"
    assert run(capf_service, {"store": location, "capf_certificate": {"key_type": "ec256"}})["changed"] is False
    regenerated = run(capf_service, {"store": location, "capf_certificate": {"regenerate": True}})
    assert regenerated["changed"] is True
    assert regenerated["capf_certificate"]["fingerprint"] != first["capf_certificate"]["fingerprint"]

    certificate, key = certfactory.make("Uploaded CAPF")
    upload = {"certificate": certfactory.pem(certificate), "private_key": certfactory.key_pem(key)}
    checked = run(capf_service, {"store": location, "capf_certificate": upload}, check=True)
    assert checked["changed"] is True and checked["capf_certificate_action"] == "upload"
    done = run(capf_service, {"store": location, "capf_certificate": upload})
    assert done["changed"] is True and done["capf_certificate"]["common_name"] == "Uploaded CAPF"
    assert "PRIVATE KEY" not in repr(done)
    assert run(capf_service, {"store": location, "capf_certificate": upload})["changed"] is False
    assert _count(location, "SELECT count(*) FROM capf_certificates") == 3

    leaf, leaf_key = certfactory.make("Not a CA", ca=False)
    refused = run(capf_service, {"store": location, "capf_certificate": {
        "certificate": certfactory.pem(leaf), "private_key": certfactory.key_pem(leaf_key)}})
    assert refused["failed"] and "must have BasicConstraints CA:TRUE" in refused["msg"]
    mismatch = run(capf_service, {"store": location, "capf_certificate": {
        "certificate": certfactory.pem(certificate), "private_key": certfactory.key_pem(leaf_key)}})
    assert mismatch["failed"] and "does not belong" in mismatch["msg"]


def test_state_stopped_when_not_running_and_started_in_check_mode(run, location):
    stopped = run(capf_service, {"store": location, "state": "stopped", "port": 1})
    assert stopped["changed"] is True  # the CAPF certificate was created
    assert stopped["service"]["state"] == "stopped" and stopped["service"]["running"] is False
    again = run(capf_service, {"store": location, "state": "stopped", "port": 1}, diff=True)
    assert again["changed"] is False and again["diff"]["after"]["service"] == "stopped"
    checked = run(capf_service, {"store": location, "state": "started", "port": 1}, check=True, diff=True)
    assert checked["changed"] is True
    assert checked["diff"]["before"]["service"] == "stopped" and checked["diff"]["after"]["service"] == "started"


def _client_files(tmp_path):
    certificate, key = certfactory.make("capf.example.com", ca=False)
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert_path.write_text(certfactory.pem(certificate))
    key_path.write_text(certfactory.key_pem(key))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def test_online_ca_authentication_mutual_tls_and_ec_options(run, location, tmp_path):
    bad = run(capf_service, {"store": location, "online_ca": dict(EST, auth="ntlm")})
    assert bad["failed"] and bad["msg"].startswith("online_ca.auth ntlm is only available with type microsoft")
    bad = run(capf_service, {"store": location, "online_ca": dict(EST, client_certificate="/etc/capf/client.pem")})
    assert bad["failed"] and "client_key" in bad["msg"] and "mutual TLS" in bad["msg"]
    cert_path, key_path = _client_files(tmp_path)
    full = dict(EST, client_certificate=cert_path, client_key=key_path, ec_supported=False)
    first = run(capf_service, {"store": location, "online_ca": full, "update_password": "on_create"})
    assert first["changed"] is True and first["online_ca"]["client_key"] == key_path
    assert first["online_ca"]["ec_supported"] is False
    again = run(capf_service, {"store": location, "online_ca": full, "update_password": "on_create"})
    assert again["changed"] is False
    # Settings stored before these options existed compare equal when the options are not given.
    plain = run(capf_service, {"store": location, "online_ca": EST, "update_password": "on_create"})
    assert plain["changed"] is True and "client_key" not in plain["online_ca"]
    assert run(capf_service, {"store": location, "online_ca": EST, "update_password": "on_create"})["changed"] is False


MONITOR = {"monitor_warn_days": [14, 3], "monitor_recipients": ["voice@example.com"], "monitor_sender": "capf@example.com",
           "monitor_smtp_host": "smtp.example.com", "monitor_smtp_port": 465, "monitor_smtp_security": "tls",
           "monitor_smtp_username": "capf", "monitor_smtp_password": "Smtp-S3cret-9f"}


def test_monitor_settings_converge_with_a_sealed_password_and_show_in_capf_info(run, location):
    checked = run(capf_service, dict(MONITOR, store=location), check=True)
    assert checked["changed"] and checked["monitor_smtp_password"] == "(set)"
    first = run(capf_service, dict(MONITOR, store=location))
    assert first["changed"] and first["parameters"]["monitor_warn_days"] == [14, 3]
    assert sorted(first["changed_parameters"]) == sorted(name for name in MONITOR if name != "monitor_smtp_password")
    again = run(capf_service, dict(MONITOR, store=location))
    assert not again["changed"] and again["monitor_smtp_password"] == "(set)"
    other = run(capf_service, {"store": location, "monitor_smtp_password": "Another-0ne"})
    assert other["changed"] and other["monitor_smtp_password"] == "(changed)" and other["changed_parameters"] == []
    info = run(capf_info, {"store": location, "gather": ["service", "expiring_certificates", "monitor"]})
    assert info["service"]["monitor_smtp_password"] == "(set)"
    assert info["expiring_certificates"] == []
    assert info["monitor"] == {"last_run": None, "last_success": None, "next_check": None}
    for result in (checked, first, again, other, info):
        assert "Smtp-S3cret-9f" not in json.dumps(result) and "Another-0ne" not in json.dumps(result)
    assert _count(location, "SELECT count(*) FROM secrets WHERE name = 'monitor.smtp_password'") == 1
    bad = run(capf_service, {"store": location, "monitor_recipients": ["ops@example.com", "x"]})
    assert bad["failed"] and bad["msg"] == "monitor_recipients[1] must be an e-mail address such as capf@example.com, got 'x'"
    bad = run(capf_service, {"store": location, "monitor_smtp_security": "none"})
    assert bad["failed"] and bad["msg"].startswith("monitor_smtp_security must be starttls or tls with monitor_smtp_username")


def test_session_retention_days_check_run_idempotent_diff_and_range(run, location):
    run(capf_service, {"store": location})
    args = {"store": location, "session_retention_days": 0}
    checked = run(capf_service, args, check=True, diff=True)
    assert checked["changed"] is True and checked["changed_parameters"] == ["session_retention_days"]
    assert (checked["diff"]["before"]["parameters"]["session_retention_days"],
            checked["diff"]["after"]["parameters"]["session_retention_days"]) == (400, 0)
    assert run(capf_service, {"store": location})["parameters"]["session_retention_days"] == 400  # check mode wrote nothing
    assert run(capf_service, args)["changed"] is True
    again = run(capf_service, args, diff=True)
    assert again["changed"] is False and again["parameters"]["session_retention_days"] == 0
    result = run(capf_service, {"store": location, "session_retention_days": 3651})
    assert result["failed"] and result["msg"] == "session_retention_days must be 0\u20133650 days, got 3651"

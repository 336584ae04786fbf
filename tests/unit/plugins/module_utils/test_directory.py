"""Directory configurations and the mapping of entries to device names (no directory needed)."""

from __future__ import annotations

import pytest

from _opencapf import directory
from _opencapf.errors import ValidationError

BASE = {"name": "corp", "urls": ["ldaps://ldap.example.org"], "search_base": "dc=example,dc=org",
        "device_template": "jabber"}


def test_defaults_are_canonical():
    config = directory.check_config(BASE)
    assert config["mapping"] == "users" and config["user_attribute"] == "uid"
    assert (config["start_tls"], config["allow_plain"], config["page_size"], config["absent_devices"]) == (
        True, False, 500, "report")
    assert config["search_filter"] == "(objectClass=inetOrgPerson)" and config["sync_interval_minutes"] is None
    assert "bind_password" not in config


@pytest.mark.parametrize("options,message", [
    ({"urls": []}, "urls must list 1-10 ldaps:// or ldap:// URLs"),
    ({"urls": ["http://ldap"]}, "urls[0] must be ldaps://HOST[:PORT] or ldap://HOST[:PORT]"),
    ({"urls": ["ldaps://ldap:70000"]}, "urls[0] must be"),
    ({"urls": ["ldap://ldap"], "start_tls": False}, "start_tls false sends the bind password in clear"),
    ({"mapping": "attribute"}, "device_attribute is required with mapping: attribute"),
    ({"mapping": "template"}, "name_template is required with mapping: template"),
    ({"mapping": "template", "name_template": "CSF"}, "name_template must contain at least one {attribute}"),
    ({"mapping": "template", "name_template": "CSF{uid!r}"}, "name_template placeholders must be LDAP attribute"),
    ({"device_attribute": "x"}, "device_attribute does not apply to mapping: users"),
    ({"page_size": 0}, "page_size must be"),
    ({"sync_interval_minutes": 0}, "sync_interval_minutes must be"),
    ({"absent_devices": "delete"}, "absent_devices must be one of keep, report, remove"),
    ({"search_filter": "uid=*"}, "search_filter must be an LDAP filter in parentheses"),
    ({"name": "a b"}, "name must be 1-64 letters"),
    ({"search_base": ""}, "search_base is required"),
])
def test_every_rule_names_its_option(options, message):
    with pytest.raises(ValidationError) as failure:
        directory.check_config(dict(BASE, **options))
    assert str(failure.value).startswith(message)


def test_plain_ldap_only_when_allowed():
    config = directory.check_config(dict(BASE, urls=["ldap://ldap"], start_tls=False, allow_plain=True))
    assert config["allow_plain"] and not config["start_tls"]


def _entry(dn, **attributes):
    return dn, {key.lower(): list(value) if isinstance(value, (list, tuple)) else [value]
                for key, value in attributes.items()}


def test_users_mapping_upper_cases_and_skips_what_is_no_device_name():
    config = directory.check_config(BASE)
    devices, skipped = directory.map_entries(config, [
        _entry("uid=j.smith,o=x", uid="j.smith", cn="John Smith"),
        _entry("uid=bad,o=x", uid="has space"),
        _entry("cn=nouid,o=x", cn="No Uid"),
        _entry("uid=long,o=x", uid="x" * 47),
        _entry("uid=dup,o=x", uid="J.SMITH"),
    ])
    assert list(devices) == ["CSFJ.SMITH"]
    assert devices["CSFJ.SMITH"]["variables"] == {"uid": "j.smith", "cn": "John Smith", "user": "j.smith",
                                                  "dn": "uid=j.smith,o=x"}
    reasons = {item["dn"]: item["reason"] for item in skipped}
    assert reasons["cn=nouid,o=x"] == "has no uid"
    assert reasons["uid=bad,o=x"].startswith("must be SEP") and reasons["uid=long,o=x"].startswith("must be SEP")
    assert reasons["uid=dup,o=x"] == "CSFJ.SMITH is already mapped from uid=j.smith,o=x"
    assert {item["field"] for item in skipped} == {"uid"}  # each skipped entry names the field that failed


def test_attribute_and_template_mappings():
    config = directory.check_config(dict(BASE, mapping="attribute", device_attribute="opencapfDeviceName"))
    devices, skipped = directory.map_entries(config, [
        _entry("uid=a,o=x", uid="a", opencapfDeviceName=["sep00112233445a", "CSFA"]),
        _entry("uid=b,o=x", uid="b")])
    assert sorted(devices) == ["CSFA", "SEP00112233445A"] and skipped == []
    config = directory.check_config(dict(BASE, mapping="template", name_template="TCT{employeeNumber}"))
    devices, skipped = directory.map_entries(config, [
        _entry("uid=a,o=x", uid="a", employeeNumber="4711"), _entry("uid=b,o=x", uid="b")])
    assert list(devices) == ["TCT4711"] and skipped[0]["reason"] == "has no employeeNumber"
    assert skipped[0]["field"] == "name_template"
    assert directory.fetched_attributes(config) == ["cn", "employeeNumber", "uid"]

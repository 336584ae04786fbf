"""LDAP directory sync against a real OpenLDAP slapd (tests/support/slapd.py): LDAPS and StartTLS,
clear errors that change nothing, the first-sync template rule, idempotence, added and removed
users, paged results past the directory's size limit, the scheduled sync of the service."""

from __future__ import annotations

import csv
import datetime
import os
import stat

import pytest

from support.slapd import DEVICE_ATTRIBUTE, SIZE_LIMIT, SYNC_DN
from support.store_phones import change_phone
from _opencapf import directory, templates
from _opencapf.ca import authority
from _opencapf.errors import CapfError
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import open_store
from _opencapf.store import directories as directory_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc, utc_now

TEMPLATE = {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
            "generate_authentication_string": True, "key_order": "ec", "description": "Jabber of {user}"}


def _config(server, base, **options):
    config = {"name": "corp", "urls": [server.ldaps_url], "ca_file": server.ca_file, "bind_dn": SYNC_DN,
              "search_base": base, "device_template": "jabber"}
    config.update(options)
    return config


def _snapshot(store):
    """Everything a sync may write: phones, directories and their devices, secrets, audit events."""
    with store.read() as tx:
        return {table: tx.query(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 (fixed table names)
                for table in ("phones", "directories", "directory_devices", "secrets", "audit_events")}


def _phone(store, name):
    with store.read() as tx:
        return phone_records.by_name(tx, [name]).get(name)


@pytest.fixture
def store(store_on_both):
    templates.define(store_on_both, "jabber", TEMPLATE)
    return store_on_both


def test_sync_lifecycle(store, slapd_server, tmp_path):
    """First sync creates every mapped device with the template (and applies it to a device that
    existed); the second changes nothing; an added user appears with the template; a removed one is
    reported, then removed with absent_devices: remove. Both stores."""
    base = slapd_server.new_base({"alice": (), "bob": (), "dave": (), "x y": ()})
    templates.define(store, "manual", {"certificate_operation": "none", "description": "by hand"})
    templates.apply(store, "manual", ["CSFDAVE"], via="template")
    strings = tmp_path / "strings.csv"
    config = _config(slapd_server, base, strings_file=str(strings))

    first = directory.sync(store, config, bind_password=slapd_server.sync_password)
    assert first["changed"] and first["directory"] == {"name": "corp", "first_sync": True, "entries": 4, "mapped": 3}
    assert first["devices"] == {"created": ["CSFALICE", "CSFBOB"], "changed": ["CSFDAVE"], "absent": [], "removed": []}
    assert [item["dn"].split(",")[0] for item in first["skipped"]] == ["uid=x y"]
    assert any("map to no device name" in warning for warning in first["warnings"])
    for name, user in (("CSFALICE", "alice"), ("CSFBOB", "bob"), ("CSFDAVE", "dave")):
        row = _phone(store, name)
        assert (row["operation"], row["auth_mode"], row["key_order"], row["description"]) == (
            "install_upgrade", "auth_string", "ec", f"Jabber of {user}")
    handed_out = list(csv.DictReader(strings.open()))
    assert sorted(item["device_name"] for item in handed_out) == ["CSFALICE", "CSFBOB", "CSFDAVE"]
    assert stat.S_IMODE(os.stat(strings).st_mode) == 0o600
    assert {item["device_name"] for item in first["authentication_strings"]} == {"CSFALICE", "CSFBOB", "CSFDAVE"}

    second = directory.sync(store, config, bind_password=slapd_server.sync_password)
    assert not second["changed"] and second["devices"] == {"created": [], "changed": [], "absent": [], "removed": []}
    assert not second["directory"]["first_sync"] and second["authentication_strings"] == []

    # Later syncs leave existing devices' CAPF settings alone; reapply_template converges them again.
    phone_records_update(store, "CSFALICE", operation="none")
    assert not directory.sync(store, config, bind_password=slapd_server.sync_password)["changed"]
    assert _phone(store, "CSFALICE")["operation"] == "none"
    again = directory.sync(store, dict(config, reapply_template=True), bind_password=slapd_server.sync_password)
    assert again["changed"] and again["devices"]["changed"] == ["CSFALICE"]
    assert _phone(store, "CSFALICE")["operation"] == "install_upgrade"

    slapd_server.add_user("carol", base=base)
    added = directory.sync(store, config, bind_password=slapd_server.sync_password)
    assert added["devices"]["created"] == ["CSFCAROL"] and added["devices"]["changed"] == []
    assert _phone(store, "CSFCAROL")["description"] == "Jabber of carol"

    slapd_server.remove_user("bob", base=base)
    reported = directory.sync(store, config, bind_password=slapd_server.sync_password)
    assert not reported["changed"] and reported["devices"]["absent"] == ["CSFBOB"]
    assert any("CSFBOB" in warning and "absent_devices: report" in warning for warning in reported["warnings"])
    assert _phone(store, "CSFBOB") is not None
    assert directory.sync(store, config, bind_password=slapd_server.sync_password)["devices"]["absent"] == ["CSFBOB"]

    planned = directory.sync(store, dict(config, absent_devices="remove"), bind_password=slapd_server.sync_password,
                             check_mode=True)
    assert planned["changed"] and planned["devices"]["removed"] == ["CSFBOB"] and _phone(store, "CSFBOB") is not None
    removed = directory.sync(store, dict(config, absent_devices="remove"), bind_password=slapd_server.sync_password)
    assert removed["devices"] == {"created": [], "changed": [], "absent": ["CSFBOB"], "removed": ["CSFBOB"]}
    assert _phone(store, "CSFBOB") is None
    final = directory.sync(store, dict(config, absent_devices="remove"), bind_password=slapd_server.sync_password)
    assert not final["changed"] and final["devices"]["absent"] == []
    with store.read() as tx:
        row = directory_records.get(tx, "corp")
        assert sorted(directory_records.devices(tx, row["id"])) == ["CSFALICE", "CSFCAROL", "CSFDAVE"]
        events = tx.query("SELECT action FROM audit_events WHERE action = 'directory.sync'")
    assert "bind_password" not in str(row) and slapd_server.sync_password not in str(_snapshot(store))
    assert len(events) == 9  # one per sync that ran (not the check-mode one)


def phone_records_update(store, name, **columns):
    """The operator changes the phone's settings ``columns`` (capf_phone's path)."""
    with store.transaction() as tx:
        change_phone(tx, name, **columns)


def test_check_mode_writes_nothing_and_plans_the_first_sync(store, slapd_server):
    base = slapd_server.new_base({"erin": ()})
    before = _snapshot(store)
    planned = directory.sync(store, _config(slapd_server, base), bind_password=slapd_server.sync_password,
                             check_mode=True)
    assert planned["changed"] and planned["devices"]["created"] == ["CSFERIN"]
    assert planned["after"]["phones"]["CSFERIN"]["certificate_operation"] == "install_upgrade"
    # the phone that would get a generated string is named, the string is not
    assert planned["authentication_strings"] == [{"device_name": "CSFERIN", "authentication_string": "(to be generated)"}]
    assert _snapshot(store) == before


def _wrong(server, base):
    """Options that fail, with the option the one-line error must name."""
    return {
        "wrong CA": ({"ca_file": server.other_ca_file}, server.sync_password, "ca_file: "),
        "CA file without a certificate": ({"ca_file": server.config}, server.sync_password,
                                          "ca_file: cannot read "),
        "missing CA file": ({"ca_file": server.config + ".missing"}, server.sync_password, "ca_file: cannot read "),
        "wrong CA over StartTLS": ({"ca_file": server.other_ca_file, "urls": [server.ldap_url]}, server.sync_password,
                                   "ca_file: "),
        "wrong password": ({}, "not-the-password", "bind_password: "),
        "unreachable": ({"urls": ["ldaps://localhost:1"]}, server.sync_password, "urls: cannot reach ldaps://localhost:1"),
        "plain LDAP not allowed": ({"urls": [server.ldap_url], "start_tls": False}, server.sync_password, "start_tls "),
        "missing search base": ({"search_base": f"ou=nowhere,{base}"}, server.sync_password, "search_base: "),
        "no such template": ({"device_template": "nothing"}, server.sync_password, "device_template "),
        "no password": ({}, None, "bind_password "),
    }


def test_errors_name_the_option_and_change_nothing(store, slapd_server):
    """Every failure is one line naming the option, and the store is exactly as before; for the
    module and the CLI too (they call the same function, see the other tests)."""
    base = slapd_server.new_base({"frank": ()})
    directory.sync(store, _config(slapd_server, base), bind_password=slapd_server.sync_password)
    slapd_server.add_user("gina", base=base)
    before = _snapshot(store)
    for case, (options, password, start) in _wrong(slapd_server, base).items():
        with pytest.raises(CapfError) as failure:
            directory.sync(store, _config(slapd_server, base, **options), bind_password=password)
        message = str(failure.value)
        assert message.startswith(start), (case, message)
        assert "\n" not in message and "not-the-password" not in message, case
        assert _snapshot(store) == before, case


@pytest.fixture
def sqlite_store(store_path):
    opened = open_store(store_path, actor="test")
    templates.define(opened, "jabber", TEMPLATE)
    yield opened
    opened.close()


def test_starttls_plain_attribute_mapping_and_paging(sqlite_store, slapd_server):
    """StartTLS and (explicitly allowed) plain LDAP; a multi-valued device attribute; more entries than
    the directory's size limit arrive through paged results."""
    users = {f"user{index:04d}": () for index in range(SIZE_LIMIT + 20)}
    users.update({"hank": ("SEP00112233445A", "csfhank2"), "ivy": ("SEP00112233445A", "not a device")})
    base = slapd_server.new_base(users)
    desk = _config(slapd_server, base, name="desk", urls=[slapd_server.ldap_url],
                   search_filter="(objectClass=opencapfDevices)", mapping="attribute", device_attribute=DEVICE_ATTRIBUTE)
    mapped = directory.sync(sqlite_store, desk, bind_password=slapd_server.sync_password)
    assert mapped["devices"]["created"] == ["CSFHANK2", "SEP00112233445A"]
    assert sorted(item["reason"][:30] for item in mapped["skipped"]) == [
        "SEP00112233445A is already map", "must be SEP (or ATA/AN/BAT) fo"]
    everyone = _config(slapd_server, base, name="all", urls=[slapd_server.ldap_url], page_size=100,
                       mapping="template", name_template="BOT{uid}", allow_plain=True, start_tls=False)
    paged = directory.sync(sqlite_store, everyone, bind_password=slapd_server.sync_password)
    assert paged["directory"]["entries"] == SIZE_LIMIT + 22 and len(paged["devices"]["created"]) == SIZE_LIMIT + 22


def test_scheduled_sync_in_the_service(store, slapd_server, state_dir):
    """A directory with sync_interval_minutes keeps its password sealed and is synced by the
    service's scheduler tick (the leading process), then not again before its interval."""
    base = slapd_server.new_base({"jack": ()})
    config = _config(slapd_server, base, name="hourly", sync_interval_minutes=60)
    earlier = utc_now() - datetime.timedelta(minutes=90)
    directory.sync(store, config, bind_password=slapd_server.sync_password, now=format_utc(earlier))
    with store.read() as tx:
        row = directory_records.get(tx, "hourly")
        sealed = tx.query("SELECT name, ciphertext FROM secrets WHERE name LIKE ?", ("directory:%",))
    assert row["next_sync_at"] == format_utc(earlier + datetime.timedelta(minutes=60))
    assert [item["name"] for item in sealed] == ["directory:hourly:bind_password"]
    assert slapd_server.sync_password.encode() not in bytes(sealed[0]["ciphertext"])
    slapd_server.add_user("kate", base=base)
    authority.ensure(store)  # a served store has its CAPF certificate (every tick publishes the CRL)
    part = Scheduling(open_store(store.location, state_dir=state_dir, actor="scheduler", create=False))
    try:
        part.tick()  # due half an hour ago: synced with the stored password
    finally:
        part.close()
    assert _phone(store, "CSFKATE")["description"] == "Jabber of kate"
    assert directory.run_due(store) == []  # next in an hour
    # Without a schedule the password is no longer kept.
    directory.sync(store, dict(config, sync_interval_minutes=None), bind_password=slapd_server.sync_password)
    with store.read() as tx:
        assert tx.query("SELECT name FROM secrets WHERE name LIKE ?", ("directory:%",)) == []
        assert directory_records.get(tx, "hourly")["next_sync_at"] is None

"""An LDAP directory sync makes the store say what the directory says, and nothing else: a property
over any directory content and any sequence of syncs of two directories, against a real slapd, on
both stores.

Entries are added, moved between the two directories' search bases or out of both, deleted; their
device name (``employeeNumber``, mapping ``users``) changes, becomes invalid, a duplicate of another
entry's, or disappears; their ``cn`` (in the template's description) becomes too long or carries a
control character; an operator changes or creates phones by hand in between. After every sync of a
directory:

* check mode, run just before, predicted exactly what the sync did (devices, counts, skipped
  entries) and wrote nothing;
* every device the directory maps (``reapply_template: true``) matches its entry through the
  directory's template exactly; a device whose entry the template cannot take (a too long or
  control-character description) is left exactly as it was, and the entry is reported with its DN,
  the field and the rule, while every other entry is applied;
* a device another directory has stays that directory's: the entry that maps to it is skipped, and
  the device is neither changed nor removed; no phone outside the directory's devices changes;
* a device of the directory whose entry left (deleted, moved out, or mapping to another name) is
  reported (``report``), removed (``remove``) or let go (``keep``), as docs/templates-and-directory.md
  says; one whose entry is still there but now gives no device name stays the directory's;
* the reported created/changed/removed devices are exactly the phones the store shows created,
  changed and removed, each with its ``phone.create``/``phone.update``/``phone.delete`` event naming
  ``via: ldap``, and one ``directory.sync`` event with the counts;
* the bind password is nowhere in the store.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging

import ldap3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.slapd import SYNC_DN
from _opencapf import directory, phone_config, templates
from _opencapf.ca import authority
from _opencapf.errors import CapfError
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import open_store
from _opencapf.store import directories as directory_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc, normalise_device_name, utc_now

TEMPLATES = {
    "a": {"certificate_operation": "install_upgrade", "key_order": "ec", "description": "A {cn}"},
    "b": {"certificate_operation": "none", "device_pool": "B pool", "description": "B {cn}"},
}
EXPECTED = {"a": {"operation": "install_upgrade", "key_order": "ec"}, "b": {"operation": "none", "device_pool": "B pool"}}
CNS = {"plain": "Pat Doe", "long": "L" * 250, "control": "tab\there"}
KEYS = 4  # entries per example
_examples = itertools.count(1)

STEPS = st.one_of(
    st.tuples(st.just("put"), st.integers(0, KEYS - 1), st.sampled_from(["a", "b"]), st.integers(0, 4),
              st.sampled_from(sorted(CNS))),
    st.tuples(st.just("number"), st.integers(0, KEYS - 1), st.integers(0, 4)),
    st.tuples(st.just("cn"), st.integers(0, KEYS - 1), st.sampled_from(sorted(CNS))),
    st.tuples(st.just("delete"), st.integers(0, KEYS - 1)),
    st.tuples(st.just("move_out"), st.integers(0, KEYS - 1)),
    st.tuples(st.just("operator"), st.integers(0, 1)),
)
SYNC = st.tuples(st.just("sync"), st.sampled_from(["a", "b"]), st.sampled_from(["report", "remove", "keep"]))


class Directory:
    """The example's entries in slapd and the model of them: key -> {where, number, cn}."""

    def __init__(self, server, example: int):
        self.server, self.example = server, example
        self.bases = {where: server.new_base() for where in ("a", "b", "outside")}
        self.entries: dict[int, dict] = {}

    def numbers(self) -> list:
        # valid and shared, valid, invalid (a space), too long for a device name, none
        return [f"n1e{self.example}", f"n2e{self.example}", "bad value", "Z" * 60, None]

    def dn(self, key: int, where: str | None = None) -> str:
        return f"uid=p{key}x{self.example},{self.bases[where or self.entries[key]['where']]}"

    def put(self, key: int, where: str, number_index: int, cn: str) -> None:
        number = self.numbers()[number_index]
        with self.server.admin() as connection:
            if key in self.entries:
                connection.delete(self.dn(key))
            attributes = {"uid": f"p{key}x{self.example}", "cn": CNS[cn], "sn": "Doe"}
            if number is not None:
                attributes["employeeNumber"] = number
            connection.add(self.dn(key, where), ["inetOrgPerson"], attributes)
        self.entries[key] = {"where": where, "number": number, "cn": cn}

    def modify(self, key: int, attribute: str, value) -> None:
        if key not in self.entries:
            return
        with self.server.admin() as connection:
            connection.modify(self.dn(key), {attribute: [(ldap3.MODIFY_REPLACE, [] if value is None else [value])]})
        self.entries[key]["number" if attribute == "employeeNumber" else "cn"] = (
            value if attribute == "employeeNumber" else next(kind for kind, text in CNS.items() if text == value))

    def delete(self, key: int) -> None:
        if key in self.entries:
            with self.server.admin() as connection:
                connection.delete(self.dn(key))
            del self.entries[key]

    def move_out(self, key: int) -> None:
        if key in self.entries and self.entries[key]["where"] != "outside":
            with self.server.admin() as connection:
                connection.modify_dn(self.dn(key), f"uid=p{key}x{self.example}", new_superior=self.bases["outside"])
            self.entries[key]["where"] = "outside"

    def config(self, name: str, absent: str) -> dict:
        return {"name": f"{name}{self.example}", "urls": [self.server.ldaps_url], "ca_file": self.server.ca_file,
                "bind_dn": SYNC_DN, "search_base": self.bases[name], "user_attribute": "employeeNumber",
                "device_template": f"truth-{name}", "reapply_template": True, "absent_devices": absent}


def _device(number) -> str | None:
    try:
        return normalise_device_name(f"CSF{number}", "name") if number is not None else None
    except ValueError:
        return None


def _state(store, names=("a", "b"), example=0):
    with store.read() as tx:
        phones = phone_records.by_name(tx)
        owned = {}
        for name in names:
            row = directory_records.get(tx, f"{name}{example}")
            owned[name] = directory_records.devices(tx, row["id"]) if row is not None else {}
        tables = {table: tx.query(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 (fixed table names)
                  for table in ("phones", "directories", "directory_devices", "secrets", "audit_events")}
        mark = tx.scalar("SELECT MAX(id) FROM audit_events") or 0
    return phones, owned, tables, mark


def _expected(model: Directory, name: str, previous: dict, others: dict) -> dict:
    """What the sync of directory ``name`` must do, from the model alone."""
    entries = sorted(((model.dn(key).lower(), model.dn(key), entry) for key, entry in model.entries.items()
                      if entry["where"] == name))
    mapped, skipped = {}, set()
    for _lower, dn, entry in entries:
        device = _device(entry["number"])
        if device is None or device in mapped or (device in others and device not in previous):
            skipped.add((dn, "employeeNumber"))
            continue
        mapped[device] = {"dn": dn, "cn": entry["cn"]}
    refused = {device for device, item in mapped.items() if item["cn"] != "plain"}
    skipped |= {(mapped[device]["dn"], "description") for device in refused}
    mapped_dns = {item["dn"].lower() for item in mapped.values()}
    idle_dns = {dn.lower() for dn, _field in skipped} - mapped_dns
    held = {device for device, dn in previous.items() if device not in mapped and dn.lower() in idle_dns}
    gone = {device for device in previous if device not in mapped and device not in held}
    return {"mapped": mapped, "refused": refused, "skipped": skipped, "held": held, "gone": gone}


def _sync_and_check(store, model: Directory, password: str, name: str, absent: str) -> None:
    config = model.config(name, absent)
    phones, owned, tables, mark = _state(store, example=model.example)
    previous, others = owned[name], owned["b" if name == "a" else "a"]
    planned = directory.sync(store, config, bind_password=password, check_mode=True)
    assert _state(store, example=model.example)[2] == tables, "check mode wrote"
    result = directory.sync(store, config, bind_password=password)
    after, owned_after, tables_after, _mark = _state(store, example=model.example)
    keys = ("changed", "devices", "counts", "skipped", "directory")
    assert {key: planned[key] for key in keys} == {key: result[key] for key in keys}, "check mode mispredicted"

    want = _expected(model, name, previous, others)
    gone_in_store = sorted(device for device in want["gone"] if device in phones)
    absent_devices = gone_in_store if absent != "keep" else []
    removed = absent_devices if absent == "remove" else []
    assert result["devices"]["absent"] == absent_devices and result["devices"]["removed"] == removed, result
    assert {(item["dn"], item["field"]) for item in result["skipped"]} == want["skipped"], result["skipped"]
    for item in result["skipped"]:
        assert item["reason"], item
    # Every device the directory maps matches its entry through the template; a refused one is as it was.
    for device, item in want["mapped"].items():
        if device in want["refused"]:
            assert after.get(device) == phones.get(device), device
            continue
        row = after[device]
        assert row["description"] == f"{name.upper()} {CNS[item['cn']]}", row
        assert {column: row[column] for column in EXPECTED[name]} == EXPECTED[name], row
    for device in removed:
        assert device not in after
    for device in set(gone_in_store) - set(removed):
        assert after[device] == phones[device]
    # No phone outside the directory's devices changes; the other directory's devices least of all.
    ours = set(previous) | set(want["mapped"])
    for device, row in phones.items():
        if device not in ours:
            assert after.get(device) == row, (device, row, after.get(device))
    assert owned_after[name] == {
        **{device: previous[device] for device in want["held"]},
        **{device: previous[device] for device in gone_in_store if absent == "report"},
        **{device: item["dn"] for device, item in want["mapped"].items()}}
    # The counts and lists are what the store shows; each change has its event, via ldap.
    created = sorted(set(after) - set(phones))
    changed = sorted(device for device in set(after) & set(phones) if after[device] != phones[device])
    assert (result["devices"]["created"], result["devices"]["changed"]) == (created, changed), result["devices"]
    assert sorted(set(phones) - set(after)) == removed
    assert result["counts"] == {"entries": len([e for e in model.entries.values() if e["where"] == name]),
                                "mapped": len(want["mapped"]), "created": len(created), "changed": len(changed),
                                "absent": len(absent_devices), "removed": len(removed),
                                "skipped": len(want["skipped"])}
    events = [row for row in tables_after["audit_events"] if row["id"] > mark]
    phone_events = sorted((row["action"], row["subject"]) for row in events if row["action"].startswith("phone."))
    assert phone_events == sorted([("phone.create", device) for device in created]
                                  + [("phone.update", device) for device in changed]
                                  + [("phone.delete", device) for device in removed])
    assert all('"via": "ldap"' in row["details"] for row in events if row["action"].startswith("phone."))
    assert [row["action"] for row in events].count("directory.sync") == 1
    assert password not in repr(tables_after) and password not in repr(result)


@pytest.fixture
def store(store_on_both):
    for name, settings_ in TEMPLATES.items():
        templates.define(store_on_both, f"truth-{name}", settings_)
    return store_on_both


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(STEPS, SYNC), min_size=1, max_size=10))
# Two directories map one device: the second leaves it to the first, even when its entry then leaves.
@example(steps=[("put", 0, "a", 0, "plain"), ("put", 1, "b", 0, "plain"), ("sync", "a", "report"),
                ("sync", "b", "report"), ("delete", 1), ("sync", "b", "remove"), ("sync", "a", "report")])
# An entry's device name becomes invalid, then another's: its device stays the directory's.
@example(steps=[("put", 0, "a", 0, "plain"), ("sync", "a", "remove"), ("number", 0, 2), ("sync", "a", "remove"),
                ("number", 0, 4), ("sync", "a", "remove"), ("number", 0, 0), ("sync", "a", "remove")])
# Entries leave (moved out, deleted), two give one name, a hostile one among them; the operator's phones.
@example(steps=[("operator", 1), ("put", 0, "a", 0, "long"), ("put", 1, "a", 0, "plain"), ("put", 2, "a", 1, "plain"),
                ("put", 3, "a", 3, "control"), ("sync", "a", "report"), ("move_out", 2), ("delete", 0),
                ("sync", "a", "remove"), ("cn", 1, "control"), ("sync", "a", "keep")])
def test_sync_makes_the_store_say_what_the_directory_says(store, slapd_server, steps):
    model = Directory(slapd_server, next(_examples))
    password = slapd_server.sync_password
    for step in steps + [("sync", "a", "report"), ("sync", "b", "remove")]:
        kind = step[0]
        if kind == "put":
            model.put(*step[1:])
        elif kind == "number":
            model.modify(step[1], "employeeNumber", model.numbers()[step[2]])
        elif kind == "cn":
            model.modify(step[1], "cn", CNS[step[2]])
        elif kind == "delete":
            model.delete(step[1])
        elif kind == "move_out":
            model.move_out(step[1])
        elif kind == "operator":
            by_hand = {"description": "by hand", "device_pool": "operator"}
            phone_config.converge(store, f"CSF{model.numbers()[step[1]]}", settings=by_hand)
        else:
            _sync_and_check(store, model, password, step[1], step[2])


def _events(store, mark: int) -> dict:
    with store.read() as tx:
        rows = tx.query("SELECT * FROM audit_events WHERE id > ? ORDER BY id", (mark,))
    return {(row["action"], row["subject"]): (row["actor"], json.loads(row["details"])) for row in rows}


def test_the_sync_s_audit_events_have_the_shape_of_every_other_path(store, slapd_server):
    """The sync converges through the one path: its ``phone.create``, ``phone.update`` and
    ``phone.delete`` events are those capf_phone writes for the same change, but for ``via: ldap``."""
    model = Directory(slapd_server, next(_examples))
    model.put(0, "a", 0, "plain")
    device = f"CSFN1E{model.example}"
    templates.define(store, "shape", {"certificate_operation": "install_upgrade", "key_order": "ec",
                                      "description": "Shape"})
    config = dict(model.config("a", "remove"), device_template="shape")
    same = {"certificate_operation": "install_upgrade", "key_order": "ec", "description": "Shape"}
    mark = _state(store)[3]
    directory.sync(store, config, bind_password=slapd_server.sync_password)
    phone_config.converge(store, "CSFBYHAND", settings=same)
    events = _events(store, mark)
    assert events[("phone.create", device)] == ("test", dict(events[("phone.create", "CSFBYHAND")][1], via="ldap"))
    assert events[("template.apply", "shape")][1]["via"] == "ldap"

    templates.define(store, "shape", dict(same, certificate_operation="delete"))
    mark = _state(store)[3]
    directory.sync(store, config, bind_password=slapd_server.sync_password)
    phone_config.converge(store, "CSFBYHAND", settings=dict(same, certificate_operation="delete"))
    events = _events(store, mark)
    assert events[("phone.update", device)] == ("test", dict(events[("phone.update", "CSFBYHAND")][1], via="ldap"))

    model.delete(0)
    mark = _state(store)[3]
    directory.sync(store, config, bind_password=slapd_server.sync_password)
    phone_config.converge(store, "CSFBYHAND", state="absent")
    events = _events(store, mark)
    assert events[("phone.delete", device)] == ("test", {"via": "ldap"})
    assert events[("phone.delete", "CSFBYHAND")] == ("test", {"via": "capf_phone"})


def test_the_bind_password_is_nowhere_but_sealed(store, slapd_server, state_dir, caplog):
    """A scheduled directory's password is kept sealed; no result, listing, log line (debug included),
    audit event, error or table of the store shows it, when the scheduled sync succeeds or fails."""
    caplog.set_level(logging.DEBUG)
    model = Directory(slapd_server, next(_examples))
    model.put(0, "a", 0, "plain")
    password = slapd_server.sync_password
    config = dict(model.config("a", "report"), sync_interval_minutes=5)
    earlier = format_utc(utc_now() - datetime.timedelta(minutes=30))
    seen = [directory.sync(store, config, bind_password=password, check_mode=True),
            directory.sync(store, config, bind_password=password, now=earlier)]
    authority.ensure(store)
    part = Scheduling(open_store(store.location, state_dir=state_dir, actor="scheduler", create=False))
    try:
        part.tick()  # due: synced with the stored password
        model.delete(0)
        with slapd_server.admin() as connection:
            connection.delete(model.bases["a"])
        with store.transaction() as tx:
            tx.execute("UPDATE directories SET next_sync_at = ? WHERE name = ?", (earlier, config["name"]))
        part.tick()  # due again, and the search base is gone: the failure is logged and kept
    finally:
        part.close()
    seen.append(directory.listing(store))
    assert "search_base" in str(seen[-1]) and "sync failed" in caplog.text
    with pytest.raises(CapfError) as failure:
        directory.sync(store, config, bind_password=password + "x")
    seen.append(str(failure.value))
    with store.read() as tx:
        tables = {table: tx.query(f"SELECT * FROM {table}")  # noqa: S608 (fixed table names)
                  for table in ("directories", "directory_devices", "secrets", "audit_events", "phones")}
    assert [row["name"] for row in tables["secrets"] if row["name"].startswith("directory:")] == [
        f"directory:{config['name']}:bind_password"]
    for text in (repr(seen), caplog.text, repr(tables)):
        assert password not in text and password.encode().hex() not in text

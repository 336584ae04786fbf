"""One path per change, and a CA never lies: the same change of a phone's CAPF settings, asked for
through every path that changes phones (the engine function of ``capf_phone``, a bulk job run now
or scheduled and run by the scheduler, a CSV import, the ``phones`` of a declarative file, a device
template re-applied, the sync of an LDAP directory (a real slapd) whose entry lists the phone), from
the same starting phone, leaves the same store and tells the truth about it.
(``test_phone_change_paths`` walks a few such changes through the modules too.)

For any starting phone (or none) and any desired settings within the documented vocabularies
(``phone_config.OPTION_COLUMNS`` and ``vocabulary``), an authentication string given, generated,
regenerated or not, and ``reissue``, each path that can express the change:

1. fails alike (the same rule about the same option; a directory sync skips the device with that rule),
   or leaves the same ``phones`` row (but its id and times), the same authentication string set or
   not, and the same CSRs;
2. reports ``changed`` exactly when the store changed (the phone, its CSRs, the audit log), and its
   diff, counts and generated string say what changed;
3. records the same audit events (action and details, but ``via`` which names the path), one
   ``phone.create``/``phone.update`` per changed phone, whose details are the row's change and never
   an authentication string;
4. run a second time, reports ``changed: false`` and writes nothing (a string regenerated on
   request is new each time, by request).

``operation_completes_by: none`` clears the phone's deadline on every path that can say it (a device
template cannot: it holds what devices get), never refused for itself.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from _opencapf import authstrings, bulk, directory, phone_config, scheduler, service_config, templates
from _opencapf import vocabulary as v
from _opencapf.ca import lsc
from _opencapf.dependencies import serialization
from _opencapf.declarative import deployment, document
from _opencapf.errors import CapfError
from _opencapf.store import audit, csrs
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from support.protocol import add_phone
from support.slapd import DEVICE_ATTRIBUTE, SYNC_DN

pytestmark = pytest.mark.both_backends

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAME = "SEP00000000D001"
TEMPLATE = "one path"
STRINGS = {"literal_a": "24681357", "literal_b": "97531864"}
TEXTS = ("", "Lobby", "Hall 2")
# What an administrator may type: padded, quoted, braced (a template's description is a pattern), accented.
TYPED_TEXTS = TEXTS + (" Lobby ", "  ", 'Room {5}, "east"', "Caf\u00e9")
# ``none`` clears the phone's deadline (a template cannot say it: that path drops out); "" is refused.
DEADLINES = ("2030-01-01T00:00:00Z", "2030-01-01", "2031-06-01T02:00:00+02:00", "2020-01-01T00:00:00Z", "",
             v.NO_DEADLINE)
PATHS = ("capf_phone", "bulk", "scheduled", "csv", "apply", "template", "ldap")
VIA = {"capf_phone": "capf_phone", "bulk": "bulk", "scheduled": "bulk", "csv": "csv", "apply": "apply",
       "template": "template", "ldap": "ldap"}
# Events a job or a directory sync records of itself (scheduled, run, synced), whatever it changes.
OWN_RECORDS = "action NOT LIKE 'job.%' AND action NOT LIKE 'directory.%'"
# A scheduled job is submitted at SUBMITTED and run at RUN_AT, which the job plans at: on the wall clock's
# side of every deadline of these tests (2020 passed, 2030 to come), so that it plans as the paths that act
# at the wall clock do. The scheduler's lapse of passed deadlines after the due jobs is no part of the change:
# an example in which it acts is not one of this path (a job at a moment of its own:
# test_job_plans_at_its_now.py).
SUBMITTED, RUN_AT = "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"
NO_DIFF = "(a job's result keeps no diff)"
# Columns that differ between two runs of the same change by their nature.
OWN_COLUMNS = ("id", "incarnation", "created_at", "updated_at")

# Every phone option, from its vocabulary: an option added to OPTION_COLUMNS fails the test below.
OPTION_VALUES = {
    "description": st.sampled_from(TYPED_TEXTS),
    "model": st.sampled_from(TYPED_TEXTS),
    "device_pool": st.sampled_from(TYPED_TEXTS),
    "security_mode": st.sampled_from(v.SECURITY_MODES),
    "certificate_operation": st.sampled_from(v.OPERATIONS),
    "authentication_mode": st.sampled_from(v.AUTH_MODES),
    "key_order": st.sampled_from(v.KEY_ORDERS),
    "rsa_key_size": st.sampled_from(v.RSA_KEY_SIZES),
    "ec_key_size": st.sampled_from(v.EC_KEY_SIZES),
    "operation_completes_by": st.sampled_from(DEADLINES),
}
FINISHED = ("succeeded", "failed", "lapsed")
EARLIER = "2020-01-01T00:00:00Z"


@st.composite
def starting_phones(draw):
    """A phone as sessions, lapses and earlier changes leave it, or no phone."""
    if not draw(st.integers(0, 5)):
        return None
    operation = draw(st.sampled_from(v.OPERATIONS))
    statuses = [status for status in v.OPERATION_STATUSES
                if status not in (("pending", "in_progress") if operation == "none" else ("none",))]
    status = draw(st.sampled_from(statuses))
    auth_mode = draw(st.sampled_from(v.AUTH_MODES))
    failures = draw(st.integers(0, 3))
    return {
        "description": draw(st.sampled_from(TEXTS)), "model": draw(st.sampled_from(TEXTS)),
        "device_pool": draw(st.sampled_from(TEXTS)), "security_mode": draw(st.sampled_from(v.SECURITY_MODES)),
        "operation": operation, "operation_status": status,
        "operation_reason": draw(st.sampled_from(("", "deadline passed", "wrong authentication string")))
        if status in FINISHED else "",
        "auth_mode": auth_mode,
        "auth_string": draw(st.sampled_from(tuple(STRINGS.values()))) if auth_mode == "auth_string" else None,
        "auth_failures": failures, "locked": int(failures == 3),
        "key_order": draw(st.sampled_from(v.KEY_ORDERS)), "rsa_key_size": draw(st.sampled_from(v.RSA_KEY_SIZES)),
        "ec_key_size": draw(st.sampled_from(v.EC_KEY_SIZES)),
        "operation_deadline": draw(st.sampled_from((None, "2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z"))),
        "csr": draw(st.sampled_from((None, "rsa", "ec"))),
    }


changes = st.fixed_dictionaries({
    "settings": st.fixed_dictionaries({}, optional=OPTION_VALUES),
    "auth": st.sampled_from(("none", "literal_a", "literal_b", "generate", "regenerate")),
    "length": st.integers(*v.AUTH_STRING_DIGITS),
    "reissue": st.booleans(),
    "spelling": st.sampled_from((str.upper, str.lower, lambda name: name[:3].lower() + name[3:])),
})


def test_every_phone_option_is_generated():
    assert set(OPTION_VALUES) == set(phone_config.OPTION_COLUMNS)


class NotExpressible(Exception):
    """The path has no way to ask for this change (it is left out of the comparison)."""


# -- the paths --------------------------------------------------------------------------------------------
# Each returns what it reported, in one shape: changed, the diff of the phone (before, after: its changed
# fields; before None for a phone created), the counts of phones created and updated, the string
# generated (or None), and warnings.


def _auth(change):
    kind = change["auth"]
    return STRINGS.get(kind), kind in ("generate", "regenerate"), kind == "regenerate"


def _name(change):
    """The device name as the change spells it (every path stores it upper case)."""
    return change["spelling"](NAME)


def _changed_fields(before, after):
    keys = [key for key in after if after[key] != before.get(key)]
    return {key: before[key] for key in keys}, {key: after[key] for key in keys}


def _via_capf_phone(store, change, exists):
    literal, generate, regenerate = _auth(change)
    result = phone_config.converge(store, _name(change), settings=change["settings"], reissue=change["reissue"],
                                   auth=phone_config.AuthRequest(literal=literal, generate=generate,
                                                                 regenerate=regenerate, length=change["length"]))
    created = result["before"] is None
    diff = None
    if result["changed"]:
        diff = (None, result["after"]) if created else _changed_fields(result["before"], result["after"])
    counts = {"created": int(created), "updated": int(not created and result["changed"])}
    return result["changed"], diff, counts, result.get("authentication_string"), result.get("warnings", [])


def _job_event_counts(store, action):
    """The counts the newest ``action`` event (``bulk.apply``, ``template.apply``) records."""
    with store.read() as tx:
        newest = audit.events(tx, limit=1, action=action)[0]["details"]
    return {key: newest[key] for key in ("matched", "changed", "unchanged", "inserted", "created", "updated", "kept")
            if key in newest}


def _bulk_result(store, result):
    if result["changed"]:
        assert _job_event_counts(store, "bulk.apply") == result["counts"], "the bulk.apply event's counts"
    phones_after = result["after"]["phones"]
    assert set(phones_after) <= {NAME} and set(result["before"]["phones"]) == set(phones_after)
    diff = (result["before"]["phones"][NAME], phones_after[NAME]) if NAME in phones_after else None
    counts = result["counts"]
    assert counts["matched"] == counts["changed"] + counts["unchanged"]
    generated = [item["authentication_string"] for item in result["authentication_strings"]
                 if item["device_name"] == NAME]
    assert len(generated) == len(result["authentication_strings"])
    return (result["changed"], diff, {"created": counts["inserted"], "updated": counts["changed"]},
            generated[0] if generated else None, result["warnings"])


def _via_bulk(store, change, exists):
    if not exists:
        raise NotExpressible("a bulk query only matches phones in the store")
    literal, generate, regenerate = _auth(change)
    return _bulk_result(store, bulk.converge(
        store, query={"names": [_name(change)]}, settings=change["settings"], authentication_string=literal,
        generate_authentication_strings=generate, regenerate_authentication_strings=regenerate,
        authentication_string_length=change["length"], reissue=change["reissue"]))


def _via_scheduled(store, change, exists):
    """``capf_bulk_update`` with ``run_at``: the job is stored, then the scheduler runs it."""
    if not exists:
        raise NotExpressible("a bulk query only matches phones in the store")
    literal, generate, regenerate = _auth(change)
    strings_file = os.path.join(store.state_dir, "scheduled-strings.csv")
    if os.path.exists(strings_file):
        os.remove(strings_file)
    bulk.converge(store, query={"names": [_name(change)]}, settings=change["settings"], authentication_string=literal,
                  generate_authentication_strings=generate, regenerate_authentication_strings=regenerate,
                  authentication_string_length=change["length"], reissue=change["reissue"],
                  strings_file=strings_file if generate else None, run_at=RUN_AT, now=SUBMITTED)
    ran = scheduler.run_due(store, RUN_AT)
    if ran["lapsed"]:
        raise NotExpressible("the scheduler lapsed the phone's passed deadline after the job")
    assert len(ran["jobs"]) == 1
    job = ran["jobs"][0]
    if job["status"] == "failed":
        raise CapfError(job["result"]["error"])
    result = job["result"]
    counts = result["counts"]
    if counts["changed"]:
        assert _job_event_counts(store, "bulk.apply") == counts, "the bulk.apply event's counts"
    assert counts["matched"] == counts["changed"] + counts["unchanged"] == 1 and counts["inserted"] == 0
    generated = None
    if os.path.exists(strings_file):
        with open(strings_file, encoding="ascii") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["device_name", "authentication_string"] and [row[0] for row in rows[1:]] == [NAME]
        generated = rows[1][1]
    assert result["generated"] == (generated is not None)
    assert result["strings_file"] == (strings_file if generated else None)
    changed = bool(counts["changed"])
    return changed, NO_DIFF if changed else None, {"created": 0, "updated": counts["changed"]}, generated, \
        result["warnings"]


def _via_csv(store, change, exists):
    literal, generate, regenerate = _auth(change)
    if regenerate:
        raise NotExpressible("a CSV cell asks for a string, not for a new one every run")
    cells = {"device_name": _name(change)}
    for option, value in change["settings"].items():
        if str(value).strip() == "":
            raise NotExpressible("an empty CSV cell leaves a setting as it is")
        cells[option] = str(value)
    if literal or generate:
        cells["authentication_string"] = literal or "generate"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(cells)
    writer.writerow(cells.values())
    return _bulk_result(store, bulk.converge(store, csv_content=text.getvalue(), reissue=change["reissue"],
                                             authentication_string_length=change["length"]))


def _apply_details(before, after):
    """The lines ``opencapf apply`` shows for a phone updated (``before``/``after``: changed fields)."""
    return [f"{key}: {before[key]} -> {after[key]}" if key == "authentication_string"
            else f"{key}: {before[key]!r} -> {after[key]!r}" for key in sorted(after)]


def _via_apply(store, change, exists):
    literal, generate, regenerate = _auth(change)
    if regenerate:
        raise NotExpressible("a declarative phone has no regenerate")
    item = dict(change["settings"], name=_name(change), reissue=change["reissue"])
    if literal:
        item["authentication_string"] = literal
    if generate:
        item.update(generate_authentication_string=True, authentication_string_length=change["length"])
    report = deployment.apply(store, document.parse(json.dumps({"opencapf": 1, "phones": [item]})))
    phones = [entry for entry in report.changes if entry.section == "phones"]
    assert len(phones) == len(report.changes) <= 1 and all(entry.item == NAME for entry in phones)
    counts = report.counts["phones"]
    assert counts["declared"] == 1 and counts["deleted"] == 0
    assert set(report.generated_strings) <= {NAME}
    diff = None
    if phones:
        # The lines are checked against the store by the caller, through the shape the other paths report.
        diff = ("apply", phones[0].action, phones[0].details)
    return (report.changed, diff, {"created": counts["created"], "updated": counts["updated"]},
            report.generated_strings.get(NAME), report.warnings)


def _define_template(store, change, exists):
    """The template of the change, defined before the change (its definition changes no phone)."""
    literal, generate, regenerate = _auth(change)
    if regenerate or change["reissue"]:
        raise NotExpressible("a template neither regenerates strings nor arms a finished operation again")
    template_settings = dict(change["settings"])
    if "description" in template_settings:  # a pattern: braces are written twice
        template_settings["description"] = template_settings["description"].replace("{", "{{").replace("}", "}}")
    if literal:
        template_settings["authentication_string"] = literal
    if generate:
        template_settings.update(generate_authentication_string=True, authentication_string_length=change["length"])
    try:
        templates.define(store, TEMPLATE, template_settings)
    except CapfError as exc:
        # A template is checked on a new device: one a new device could not take is refused.
        raise NotExpressible(str(exc)) from None


def _template_apply(store, change):
    result = templates.apply(store, TEMPLATE, [_name(change)], via="template", existing="reapply")
    phones_after = result["after"]["phones"]
    assert set(phones_after) <= {NAME} and set(result["before"]["phones"]) == set(phones_after)
    diff = (result["before"]["phones"][NAME], phones_after[NAME]) if NAME in phones_after else None
    counts = result["counts"]
    if result["changed"]:
        assert _job_event_counts(store, "template.apply") == counts, "the template.apply event's counts"
    assert counts["kept"] == 0 and sum(counts.values()) == 1
    assert result["created"] == ([NAME] if counts["created"] else [])
    assert result["updated"] == ([NAME] if counts["updated"] else [])
    generated = [item["authentication_string"] for item in result["authentication_strings"]]
    return (result["changed"], diff, {"created": counts["created"], "updated": counts["updated"]},
            generated[0] if generated else None, [])


class Directory:
    """The directory of the LDAP path: one entry listing the phone, synced with the template of the change,
    which every sync applies again (``reapply_template``)."""

    def __init__(self, store, server):
        self.store = store
        self.options = {"name": "corp", "urls": [server.ldaps_url], "ca_file": server.ca_file, "bind_dn": SYNC_DN,
                        "search_base": server.new_base({"lobby": (NAME.lower(),)}), "mapping": "attribute",
                        "device_attribute": DEVICE_ATTRIBUTE, "device_template": TEMPLATE, "reapply_template": True}
        self.password = server.sync_password
        # The first sync stores the configuration (a change of the directory's own); the phone is set up
        # again by each path.
        templates.define(store, TEMPLATE, {})
        directory.sync(store, self.options, bind_password=self.password)

    def sync(self, store):
        result = directory.sync(store, self.options, bind_password=self.password)
        if result["skipped"]:
            [skipped] = result["skipped"]
            assert result["changed"] is False and result["counts"]["skipped"] == 1 and len(result["warnings"]) == 1
            raise CapfError(f"{skipped['field']} {skipped['reason']}")
        assert result["directory"] == {"name": "corp", "first_sync": False, "entries": 1, "mapped": 1}
        phones_after = result["after"]["phones"]
        assert set(phones_after) <= {NAME} and set(result["before"]["phones"]) == set(phones_after)
        diff = (result["before"]["phones"][NAME], phones_after[NAME]) if NAME in phones_after else None
        counts = result["counts"]
        assert counts["absent"] == counts["removed"] == counts["skipped"] == 0
        assert result["devices"]["created"] == ([NAME] if counts["created"] else [])
        assert result["devices"]["changed"] == ([NAME] if counts["changed"] else [])
        generated = [item["authentication_string"] for item in result["authentication_strings"]]
        return (result["changed"], diff, {"created": counts["created"], "updated": counts["changed"]},
                generated[0] if generated else None, result["warnings"])


RUN = {"capf_phone": _via_capf_phone, "bulk": _via_bulk, "scheduled": _via_scheduled, "csv": _via_csv, "apply": _via_apply,
       "template": lambda store, change, exists: _template_apply(store, change),
       "ldap": lambda store, change, exists: change["directory"].sync(store)}
PREPARE = {"template": _define_template, "ldap": _define_template}


# -- the store, read back ---------------------------------------------------------------------------------


def _set_up(store, start, keys):
    with store.transaction() as tx:
        phone_records.delete(tx, "test", NAME)
    templates.remove(store, TEMPLATE)
    if start is None:
        return
    columns = {key: value for key, value in start.items() if key not in ("auth_string", "csr")}
    refused = (columns["auth_mode"] == "auth_string" and columns["security_mode"] in phone_config.SECURE_MODES
               and columns["operation"] != "none")
    add_phone(store, NAME, auth_string=start["auth_string"], **(dict(columns, operation="none") if refused else columns))
    if refused:  # a phone no path makes any more (``plan_phone``), as a store of an earlier release may hold it
        with store.transaction() as tx:
            tx.execute("UPDATE phones SET operation = ? WHERE name = ?", (columns["operation"], NAME))
    if start["csr"] is not None:
        der = keys[start["csr"]].public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        with store.transaction() as tx:
            csrs.add(tx, phone_records.get(tx, NAME)["id"], "%064x" % len(der), der)
    # Last changed long ago: a change writes it or not, whatever second it runs in. A change of a phone
    # whose stored operation status is not the one views report (a passed deadline, an abandoned session)
    # records the reported one, whose row may then hold the values it started with.
    with store.transaction() as tx:
        tx.execute("UPDATE phones SET updated_at = ? WHERE name = ?", (EARLIER, NAME))


def _dump(store) -> dict:
    """What a change of the phone may touch: its row, its CSRs, and the audit log's length."""
    with store.read() as tx:
        row = phone_records.get(tx, NAME)
        requests = [] if row is None else tx.query(
            "SELECT status, reason, updated_at FROM csrs WHERE phone_id = ? ORDER BY id", (row["id"],))
        # A job's or a directory's own events are its record, not the phone's.
        marker = tx.scalar(f"SELECT max(id) FROM audit_events WHERE {OWN_RECORDS}") or 0
        return {"phone": row, "csrs": requests, "audit": marker}


def _events_since(store, marker):
    with store.read() as tx:
        rows = tx.query(f"SELECT action, subject, details FROM audit_events WHERE id > ? AND {OWN_RECORDS} ORDER BY id",
                        (marker,))
    return [dict(row, details=json.loads(row["details"])) for row in rows]


def _string_token(store, row, before_row, generated):
    """Which authentication string a row holds, by what it matches (its salt differs every time)."""
    if not row["auth_hash"]:
        return None
    salt, digest = bytes(row["auth_salt"]), bytes(row["auth_hash"])
    if before_row is not None and before_row["auth_hash"] and bytes(before_row["auth_hash"]) == digest:
        return "kept"
    for token, value in dict(STRINGS, generated=generated).items():
        if value is not None and authstrings.matches(store.secret(), salt, digest, value):
            return token
    return "unknown"


def _outcome(store, dump, before_dump, generated):
    row = dump["phone"]
    if row is None:
        return None
    kept = {key: value for key, value in row.items() if key not in OWN_COLUMNS + ("auth_salt", "auth_hash")}
    kept["authentication_string"] = _string_token(store, row, before_dump["phone"], generated)
    return {"phone": kept, "csrs": [(item["status"], item["reason"]) for item in dump["csrs"]]}


def _view(row, auth_view=None):
    return phone_config.settings_view(row, auth_view)


def _expected_diff(before_row, after_row):
    """The phone's change as every path must report it: the fields of its settings view that changed,
    the authentication string as ``(new)``, ``(changed)`` or ``(unset)`` when its hash changed."""
    hash_before = bytes(before_row["auth_hash"]) if before_row is not None and before_row["auth_hash"] else None
    hash_after = bytes(after_row["auth_hash"]) if after_row["auth_hash"] else None
    auth_view = ("(unset)" if hash_after is None else "(set)" if hash_after == hash_before
                 else "(changed)" if hash_before else "(new)")
    after = _view(after_row, auth_view)
    if before_row is None:
        return None, after
    return _changed_fields(_view(before_row), after)


def _error(exc: CapfError) -> str:
    """An error without the path's way of naming the phone and the option's place."""
    text = str(exc)
    text = re.sub(r"^document is not a valid opencapf file:\n  ", "", text)  # the schema's: field: rule
    text = re.sub(r"^csv_content has 1 bad row, nothing was imported: line \d+: ", "", text)
    text = re.sub(r"^(phone [A-Z0-9]+: |phones\[\d+\]\.|set\.|templates\[\d+\]\.)", "", text)
    text = re.sub(r"^(\w+): ", r"\1 ", text)
    return re.sub(r", got .*$", "", text, flags=re.DOTALL)  # the value, which a directory sync's skip leaves out


_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _texts(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, (str, bytes)):
        yield value.decode("latin-1") if isinstance(value, bytes) else value


def _secrets_shown(value, secrets) -> bool:
    """Whether any secret is in a text of ``value`` (times aside: a 4-digit string may be a year)."""
    runs = {run for text in _texts(value) for run in re.findall(r"[0-9]+", _TIMESTAMP.sub("", text))}
    return any(secret in runs or any(secret in run for run in runs if len(secret) >= 6) for secret in secrets)


def _run_path(store, path, start, change, keys):
    """Run the change through ``path`` from ``start``; check what it reports against the store.
    Returns None (not expressible), ("error", text), or ("done", outcome, audit events)."""
    _set_up(store, start, keys)
    try:
        if path in PREPARE:
            PREPARE[path](store, change, start is not None)
    except NotExpressible:
        return None
    before = _dump(store)
    try:
        changed, diff, counts, generated, warnings = RUN[path](store, change, start is not None)
    except NotExpressible:
        return None
    except CapfError as exc:
        assert _dump(store) == before, f"{path}: a failed change wrote to the store"
        return ("error", _error(exc))
    after = _dump(store)
    events = _events_since(store, before["audit"])
    secrets = list(STRINGS.values()) + ([generated] if generated else [])

    # 2. changed is the store's change; the diff, counts and string say what changed.
    assert changed == (after != before), f"{path}: changed={changed}, the store says otherwise"
    row_changed = after["phone"] != before["phone"]
    assert changed == row_changed, f"{path}: the CSRs or the log changed without the phone"
    expected = _expected_diff(before["phone"], after["phone"]) if row_changed else None
    if path == "apply" and diff is not None:
        _section, action, details = diff
        if expected[0] is None:
            assert action == "create"
            assert details == [f"{key}: {value!r}" if key != "authentication_string" else f"{key}: {value}"
                               for key, value in sorted(expected[1].items())
                               if key != "name" and value not in ("", None)], f"{path}: the plan's lines {details}"
        else:
            assert action == "update" and details == _apply_details(*expected), f"{path}: the plan's lines {details}"
    elif diff != NO_DIFF:
        assert diff == expected, f"{path}: the diff {diff} is not the store's change {expected}"
    assert counts == {"created": int(before["phone"] is None and row_changed),
                      "updated": int(before["phone"] is not None and row_changed)}, f"{path}: counts {counts}"
    token = _string_token(store, after["phone"], before["phone"], generated)
    if generated is not None:
        assert token == "generated" and len(generated) == change["length"], f"{path}: the string returned"
    else:
        assert token != "generated"
    assert token != "unknown", f"{path}: the phone holds a string nobody asked for"
    assert warnings == [], f"{path}: warnings {warnings}"

    # 3. One audit event per changed phone, its details the row's change, never a secret.
    assert not _secrets_shown(events, secrets), f"{path}: a secret in the audit log"
    assert not _secrets_shown(diff, secrets), f"{path}: a secret in the diff"
    own = [event for event in events if event["subject"] == NAME]
    phone_events = [event for event in own if event["action"].startswith("phone.")]
    if row_changed:
        assert len(phone_events) == 1, f"{path}: {phone_events}"
        event = phone_events[0]
        assert event["action"] == ("phone.create" if before["phone"] is None else "phone.update")
        assert event["details"].pop("via") == VIA[path]
        base = before["phone"] or phone_config.new_phone_row(NAME, _defaults(store))
        shown = {phone_config.COLUMN_OPTIONS.get(column, column): after["phone"][column]
                 for column in phone_config.WRITE_COLUMNS
                 if column not in phone_config.AUDIT_HIDDEN and after["phone"][column] != base[column]}
        if after["phone"]["auth_hash"] != base["auth_hash"]:
            shown["auth_change"] = expected[1]["authentication_string"]
        assert event["details"] == shown, f"{path}: the audit event is not the row's change"
    else:
        assert events == [], f"{path}: an unchanged phone left audit events {events}"
    failed = [item for item, was in zip(after["csrs"], before["csrs"]) if item != was]
    csr_events = [event for event in own if event["action"] == "csr.failed"]
    assert [item["status"] for item in failed] == ["failed"] * len(csr_events)
    assert [item["reason"] for item in failed] == [event["details"]["reason"] for event in csr_events]
    for event in csr_events:
        assert event["details"].pop("via") == VIA[path]
        event["details"]["csr_id"] = "(the phone's CSR)"  # a new id in each copy of the store

    # 4. The same change again changes nothing.
    if change["auth"] != "regenerate":
        again = RUN[path](store, change, after["phone"] is not None)
        assert again[0] is False and again[1] is None and again[3] is None, f"{path}: a second run {again[:4]}"
        assert _dump(store) == after, f"{path}: a second run wrote to the store"
    return ("done", _outcome(store, after, before, generated), [(event["action"], event["details"]) for event in own])


def _defaults(store):
    with store.read() as tx:
        return service_records.read(tx)


_DIRECTORIES: dict = {}  # id of a store -> its Directory (one per store the test opens)


# A failed operation with a deadline, and an empty operation_completes_by: capf_phone cleared the
# deadline (and armed the operation again), a bulk job and a template dropped the option, the declarative
# file refused it. Every path refuses it now.
EMPTY_DEADLINE = (
    {"description": "", "model": "", "device_pool": "", "security_mode": "non_secure", "operation": "install_upgrade",
     "operation_status": "failed", "operation_reason": "wrong authentication string", "auth_mode": "null_string",
     "auth_string": None, "auth_failures": 0, "locked": 0, "key_order": "rsa", "rsa_key_size": 2048,
     "ec_key_size": 256, "operation_deadline": "2030-01-01T00:00:00Z", "csr": None},
    {"settings": {"operation_completes_by": ""}, "auth": "none", "length": 8, "reissue": False,
     "spelling": str.upper},
)


# A lapsed operation whose deadline is cleared: pending again on every path, as with a new deadline.
CLEARED_DEADLINE = (
    dict(EMPTY_DEADLINE[0], operation_status="lapsed", operation_reason="deadline passed",
         operation_deadline="2020-01-01T00:00:00Z"),
    dict(EMPTY_DEADLINE[1], settings={"operation_completes_by": v.NO_DEADLINE}),
)
# ... and a phone without a deadline whose deadline is cleared: no change on any path.
NO_DEADLINE_CLEARED = (dict(EMPTY_DEADLINE[0], operation_deadline=None), CLEARED_DEADLINE[1])


# A phone a CSV import creates: the job's bulk.apply event counted it as matched, its result did not.
NEW_PHONE = {"settings": {}, "auth": "none", "length": 8, "reissue": False, "spelling": str.upper}


@PROPERTY
@example(start=EMPTY_DEADLINE[0], change=EMPTY_DEADLINE[1])
@example(start=CLEARED_DEADLINE[0], change=CLEARED_DEADLINE[1])
@example(start=NO_DEADLINE_CLEARED[0], change=NO_DEADLINE_CLEARED[1])
@example(start=None, change=NEW_PHONE)
@given(start=starting_phones(), change=changes)
def test_every_path_makes_the_same_change_and_tells_the_truth_about_it(store, rsa_phone_key, ec_phone_key,
                                                                       slapd_server, start, change):
    keys = {"rsa": rsa_phone_key, "ec": ec_phone_key}
    known = _DIRECTORIES.get(id(store))
    if known is None or known.store is not store:  # the first example on this store
        known = _DIRECTORIES[id(store)] = Directory(store, slapd_server)
    change = dict(change, directory=known)
    results = {}
    for path in PATHS:
        result = _run_path(store, path, start, change, keys)
        if result is not None:
            results[path] = result
        event(f"{path}: {'-' if result is None else result[0]}")
    assert "capf_phone" in results
    reference = results["capf_phone"]
    if change["settings"].get("operation_completes_by") == v.NO_DEADLINE:
        # ``none`` is no bad deadline: it clears the phone's (or, with another rule broken, that rule is said).
        assert reference[0] == "done" or not reference[1].startswith("operation_completes_by"), reference
        assert reference[0] == "error" or reference[1]["phone"]["operation_deadline"] is None, reference
    for path, result in results.items():
        # 1. The same rule broken, or the same row, string, CSRs and audit events.
        assert result[:2] == reference[:2], f"{path} differs from capf_phone: {result[:2]} != {reference[:2]}"
        if result[0] == "done":
            assert result[2] == reference[2], f"{path}: its audit events differ from capf_phone's"


service_key_settings = st.fixed_dictionaries({"key_order": st.sampled_from(v.KEY_ORDERS),
                                              "rsa_key_size": st.sampled_from(v.RSA_KEY_SIZES),
                                              "ec_key_size": st.sampled_from(v.EC_KEY_SIZES)})


@settings(PROPERTY, max_examples=25)
@given(key_settings=service_key_settings)
def test_a_phone_an_lsc_is_issued_for_is_created_as_every_path_creates_one(ca_store, rsa_phone_key, key_settings):
    """``opencapf issue`` for a device not in the store creates it: with the service's key settings and the
    one ``phone.create`` event (``via: issue``), as ``capf_phone`` creates a phone declared with no settings."""
    store = ca_store
    service_config.converge(store, parameters_wanted=key_settings)
    created = {}
    for path in ("capf_phone", "issue"):
        with store.transaction() as tx:
            phone_records.delete(tx, "test", NAME)
        before = _dump(store)
        if path == "capf_phone":
            phone_config.converge(store, NAME.lower())
        else:
            lsc.issue(store, NAME.lower(), rsa_phone_key.public_key(), source="cli")
        row = _dump(store)["phone"]
        assert {key: row[key] for key in key_settings} == key_settings, f"{path}: the service's key settings"
        events = [event for event in _events_since(store, before["audit"]) if event["action"].startswith("phone.")]
        assert [(event["action"], event["subject"], event["details"].pop("via", None)) for event in events] == [
            ("phone.create", NAME, path)], path
        created[path] = ({key: value for key, value in row.items() if key not in OWN_COLUMNS}, events[0]["details"])
    assert created["issue"] == created["capf_phone"]

"""One path per change: the same requested change of a phone's settings, asked for by capf_phone, a
bulk job, a CSV import, the declarative file, a device template (re-)applied to it or the first sync
of an LDAP directory (a real slapd) listing it, leaves the same stored row and the same audit event.
Every change in an SQLite store; an operation, a generated and a removed authentication string and a
new phone in a PostgreSQL store too."""

from __future__ import annotations

import json

import pytest

from ansible_collections.opencapf.capf.plugins.modules import capf_phone

from _opencapf import authstrings, bulk, directory, phone_config, templates
from _opencapf.declarative import deployment, document
from _opencapf.store import open_store
from support.slapd import DEVICE_ATTRIBUTE, SYNC_DN
from support.stores import backend_cases, query, store_exists

NAME = "SEP001122334455"
SEED = {"certificate_operation": "install_upgrade", "description": "Lobby", "device_pool": "HQ"}
PATHS = ("capf_phone", "bulk", "csv", "apply", "template", "ldap")
CREATING_PATHS = ("capf_phone", "csv", "apply", "template", "ldap")  # a bulk job's query only finds phones that exist
# Columns that differ by when or how a change was made, never by what it was.
VOLATILE = ("id", "incarnation", "created_at", "updated_at", "auth_salt", "auth_hash")

# (seed settings or None for a new phone, requested settings, authentication string: None, digits or "generate")
CHANGES = {
    "operation": (SEED, {"certificate_operation": "none"}, None),
    "operation_rearmed": (SEED, {"certificate_operation": "delete"}, None),
    "auth_string_given": (SEED, {"authentication_mode": "auth_string"}, "4711081512"),
    "auth_string_generated": (SEED, {"authentication_mode": "auth_string"}, "generate"),
    "auth_string_removed": (dict(SEED, authentication_mode="auth_string"), {"authentication_mode": "null_string"},
                            None),
    "key_settings": (SEED, {"key_order": "ec", "ec_key_size": 384, "rsa_key_size": 4096}, None),
    "security_mode": (SEED, {"security_mode": "encrypted", "authentication_mode": "existing_cert_mic"}, None),
    "deadline": (SEED, {"operation_completes_by": "2030-01-01"}, None),
    "description": (SEED, {"description": "Reception", "model": "Cisco 8845"}, None),
    "new_phone": (None, {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
                         "device_pool": "Branch", "key_order": "ec_preferred"}, "generate"),
    "unchanged": (SEED, dict(SEED), None),
}
ON_POSTGRESQL = ["operation", "auth_string_generated", "auth_string_removed", "new_phone"]


def _seed(store_path, settings):
    with open_store(store_path, actor="test") as store:
        auth = phone_config.AuthRequest(literal="2468") if settings.get("authentication_mode") == "auth_string" \
            else None
        phone_config.converge(store, NAME, settings=settings, auth=auth)


def _through(path, run, store_path, settings, secret, slapd_server=None):
    """Ask for the change through one path; return the generated string (or None)."""
    if path == "capf_phone":
        args = dict(settings, name=NAME.lower(), store=store_path)
        if secret == "generate":
            args["generate_authentication_string"] = True
        elif secret is not None:
            args["authentication_string"] = secret
        result = run(capf_phone, args)
        assert not result["failed"], result["msg"]
        return result.get("authentication_string")
    with open_store(store_path, actor="test") as store:
        if path == "bulk":
            result = bulk.converge(store, query={"names": [NAME]}, settings=settings,
                                   generate_authentication_strings=secret == "generate",
                                   authentication_string=None if secret == "generate" else secret)
            return result["authentication_strings"][0]["authentication_string"] \
                if result["authentication_strings"] else None
        if path == "csv":
            columns = ["device_name", *settings] + (["authentication_string"] if secret else [])
            cells = [NAME, *(str(value) for value in settings.values())] + ([secret] if secret else [])
            result = bulk.converge(store, csv_content=",".join(columns) + "\n" + ",".join(cells) + "\n")
            return result["authentication_strings"][0]["authentication_string"] \
                if result["authentication_strings"] else None
        if path in ("template", "ldap"):
            template = dict(settings)
            if secret == "generate":
                template["generate_authentication_string"] = True
            elif secret is not None:
                template["authentication_string"] = secret
            templates.define(store, "Requested", template)
            if path == "ldap":  # the first sync of a directory whose one entry lists the phone
                base = slapd_server.new_base({"lobby": (NAME.lower(),)})
                result = directory.sync(store, {
                    "name": "corp", "urls": [slapd_server.ldaps_url], "ca_file": slapd_server.ca_file,
                    "bind_dn": SYNC_DN, "search_base": base, "mapping": "attribute",
                    "device_attribute": DEVICE_ATTRIBUTE, "device_template": "Requested"},
                    bind_password=slapd_server.sync_password)
            else:
                result = templates.apply(store, "Requested", [NAME.lower()], via="template", existing="reapply")
            return result["authentication_strings"][0]["authentication_string"] \
                if result["authentication_strings"] else None
        item = dict(settings, name=NAME)
        if secret == "generate":
            item["generate_authentication_string"] = True
        elif secret is not None:
            item["authentication_string"] = secret
        report = deployment.apply(store, document.parse(json.dumps({"opencapf": 1, "phones": [item]})))
        return report.generated_strings.get(NAME)


def _state(location, after_event):
    [row] = query(location, "SELECT * FROM phones WHERE name = ?", (NAME,))
    events = [(event["action"], event["subject"], json.loads(event["details"])) for event in query(
        location, "SELECT action, subject, details FROM audit_events WHERE id > ? AND action LIKE 'phone.%' ORDER BY id",
        (after_event,))]
    return row, events


def _last_event(location):
    if not store_exists(location):  # no store yet: the change creates it
        return 0
    return query(location, "SELECT coalesce(max(id), 0) AS last FROM audit_events")[0]["last"]


@pytest.mark.usefixtures("location")  # the backend, and the state directory of a PostgreSQL store
@pytest.mark.parametrize("store_location, change", backend_cases(sorted(CHANGES), ON_POSTGRESQL),
                         indirect=["store_location"])
def test_every_path_stores_the_same_row_and_audit_event(change, run, more_store_locations, slapd_server):
    seed, settings, secret = CHANGES[change]
    outcomes = {}
    for path in PATHS if seed is not None else CREATING_PATHS:
        where = more_store_locations(path)
        if seed is not None:
            _seed(where, seed)
        before = _last_event(where)
        generated = _through(path, run, where, settings, secret, slapd_server)
        row, events = _state(where, before)
        with open_store(where) as store:
            key = store.secret()
        if secret == "generate":
            assert generated and authstrings.matches(key, row["auth_salt"], row["auth_hash"], generated), path
        else:
            assert generated is None, path
            if secret is not None:
                assert authstrings.matches(key, row["auth_salt"], row["auth_hash"], secret), path
        for _action, _subject, details in events:
            assert details.pop("via") == path
        kept = {column: value for column, value in row.items() if column not in VOLATILE}
        kept["has_auth_hash"] = row["auth_hash"] is not None
        outcomes[path] = (kept, events)
    reference = outcomes["capf_phone"]
    assert all(outcome == reference for outcome in outcomes.values()), outcomes
    expected_events = 0 if change == "unchanged" else 1
    assert len(reference[1]) == expected_events
    if expected_events:
        # The event names every setting the change set, by its option name, and a new string as such.
        details = reference[1][0][2]
        assert {option for option, value in settings.items() if (seed or {}).get(option) != value} <= set(details)
        assert ("auth_change" in details) == (secret is not None or change == "auth_string_removed")

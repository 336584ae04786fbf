"""Device templates in the engine, against a real store on both backends: defining them, the one
rule set of phone settings, and applying them through the one converge path.

Invariants: applying a template to any devices a second time changes nothing; devices that exist keep
their CAPF settings unless the template is re-applied, which gives them exactly the template's
settings; an invalid template or application names the option path and writes nothing; generated
strings are handed out once (returned, or in a 0600 CSV) and stored only as keyed hashes.
"""

from __future__ import annotations

import csv
import os
import shutil
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from _opencapf import authstrings, phone_config, templates
from _opencapf import vocabulary as v
from _opencapf.errors import NotFoundError, ValidationError
from _opencapf.store import open_store

NOW = "2026-12-01T12:00:00Z"
SOFTPHONE = {"description": "Softphone of {user}", "device_pool": "Soft", "certificate_operation": "install_upgrade",
             "authentication_mode": "auth_string", "generate_authentication_string": True, "key_order": "ec_preferred",
             "operation_completes_in_days": 14}


@pytest.fixture
def store(store_on_both):
    """The store operations run against both backends."""
    return store_on_both


@pytest.fixture
def sqlite_store(store_path):
    """Validation fails before the store is written, whichever its backend: one backend suffices."""
    with open_store(store_path, actor="test") as opened:
        yield opened


def _rows(store, names=None):
    with store.read() as tx:
        rows = tx.query("SELECT * FROM phones ORDER BY name")
    return {row["name"]: row for row in rows if names is None or row["name"] in names}


def _events(store):
    with store.read() as tx:
        return tx.scalar("SELECT count(*) FROM audit_events")


def _seed(store, name, **settings):
    phone_config.converge(store, name, settings=dict(settings))


def test_define_is_idempotent_and_get_list_remove(store):
    first = templates.define(store, "Jabber softphones", SOFTPHONE)
    assert first["changed"] and first["before"] is None
    assert first["after"] == dict(SOFTPHONE, name="Jabber softphones", authentication_string_length=8)
    assert templates.define(store, "Jabber softphones", SOFTPHONE)["changed"] is False
    assert templates.get(store, "Jabber softphones") == first["after"]
    assert templates.get(store, "jabber softphones") is None  # names are case-sensitive
    replaced = templates.define(store, "Jabber softphones", dict(SOFTPHONE, device_pool=None))
    assert replaced["changed"] and "device_pool" not in replaced["after"]  # a template is exactly what is given
    templates.define(store, "Desk", {"authentication_mode": "existing_cert_mic"})
    assert [view["name"] for view in templates.list_all(store)] == ["Desk", "Jabber softphones"]
    assert templates.remove(store, "Desk", check_mode=True)["changed"] is True
    assert templates.get(store, "Desk") is not None
    assert templates.remove(store, "Desk")["changed"] is True
    assert templates.remove(store, "Desk")["changed"] is False
    assert [view["name"] for view in templates.list_all(store)] == ["Jabber softphones"]


def test_shared_string_is_sealed_compared_and_never_shown(store):
    shared = {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
              "authentication_string": "4711081512"}
    first = templates.define(store, "Lobby", shared)
    assert first["after"]["authentication_string"] == "(new)"
    assert templates.define(store, "Lobby", shared)["changed"] is False
    changed = templates.define(store, "Lobby", dict(shared, authentication_string="2468"), check_mode=True)
    assert changed["changed"] and changed["after"]["authentication_string"] == "(changed)"
    assert templates.get(store, "Lobby")["authentication_string"] == "(set)"
    with store.read() as tx:
        dumped = repr(tx.query("SELECT * FROM device_templates")) + repr(tx.query("SELECT * FROM audit_events"))
        dumped += repr(tx.query("SELECT * FROM secrets"))
    assert "4711081512" not in dumped and "4711081512" not in repr(templates.load(store, "Lobby"))
    applied = templates.apply(store, "Lobby", ["SEP001122334455"], via="template")
    assert applied["authentication_strings"] == []  # a shared string is the administrator's, never generated
    row = _rows(store)["SEP001122334455"]
    assert authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], "4711081512")


BAD_TEMPLATES = [
    ({"rsa_key_size": 1000}, "templates[2].rsa_key_size must be 1024\u20134096 bits"),
    ({"key_order": "dsa"}, "templates[2].key_order must be one of rsa, ec, ec_preferred"),
    ({"operation_completes_in_days": 0}, "templates[2].operation_completes_in_days must be 1\u20133650 days"),
    ({"operation_completes_in_days": 3, "operation_completes_by": "2030-01-01"},
     "templates[2].operation_completes_in_days cannot be combined with operation_completes_by"),
    ({"authentication_mode": "auth_string"}, "templates[2].authentication_string is required"),
    ({"authentication_mode": "auth_string", "authentication_string": "12"},
     "templates[2].authentication_string must be 4\u201310 digits"),
    ({"authentication_mode": "auth_string", "authentication_string": "1234", "generate_authentication_string": True},
     "templates[2].authentication_string cannot be combined with generate_authentication_string"),
    ({"authentication_string_length": 6}, "templates[2].authentication_string_length is only used with"),
    ({"security_mode": "encrypted", "certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
      "generate_authentication_string": True}, "templates[2].authentication_mode must not be auth_string"),
    ({"description": "Phone {user.name}"}, "templates[2].description may hold only plain placeholders"),
    ({"description": "Phone {"}, "templates[2].description is not a valid pattern"),
    ({"description": "x" * 201}, "templates[2].description must be at most 200 characters"),
    ({"colour": "blue"}, "templates[2].colour is not a template option"),
]


BAD_TEMPLATE_IDS = [message.split(" ")[0].split(".")[1] + str(index) for index, (_s, message) in enumerate(BAD_TEMPLATES)]


@pytest.mark.parametrize("settings_,message", BAD_TEMPLATES, ids=BAD_TEMPLATE_IDS)
def test_invalid_template_names_the_option_path_and_writes_nothing(sqlite_store, settings_, message):
    store = sqlite_store
    templates.define(store, "Kept", {"device_pool": "A"})
    before = _events(store), templates.list_all(store)
    with pytest.raises(ValidationError) as raised:
        templates.define(store, "Kept", settings_, prefix="templates[2].")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert (_events(store), templates.list_all(store)) == before


def test_bad_name_and_unknown_template(store):
    with pytest.raises(ValidationError, match="^name must be 1\u201364 letters"):
        templates.define(store, "-x", {})
    with pytest.raises(NotFoundError, match="no device template named 'Nope'"):
        templates.apply(store, "Nope", ["SEP001122334455"], via="template")


def test_desired_for_is_one_item_of_the_converge_path(store):
    templates.define(store, "Jabber", SOFTPHONE)
    template = templates.load(store, "Jabber")
    desired = templates.desired_for(template, "csfjsmith", {"user": "jsmith"}, now=NOW)
    assert desired["name"] == "CSFJSMITH" and desired["prefix"] == "phone CSFJSMITH: "
    assert desired["settings"] == {"description": "Softphone of jsmith", "device_pool": "Soft",
                                   "operation": "install_upgrade", "auth_mode": "auth_string", "key_order": "ec_preferred",
                                   "operation_deadline": "2026-12-15T12:00:00Z"}
    assert desired["auth"] == phone_config.AuthRequest(generate=True, length=8)
    with store.transaction() as tx:
        plan, = phone_config.converge_many(tx, "test", store.secret(),
                                           [(None, phone_config.PhoneRequest(**desired))], via="ldap")
    assert plan.generated and _rows(store)["CSFJSMITH"]["description"] == "Softphone of jsmith"
    with pytest.raises(ValidationError, match=r"^phone CSFAB: description uses the placeholder \{user\}"):
        templates.desired_for(template, "CSFAB", {})
    literal = templates.Template("Braces", {"description": "{{{device_name}}} of {template}"})
    assert templates.desired_for(literal, "CSFAB")["settings"]["description"] == "{CSFAB} of Braces"


def test_existing_devices_are_kept_by_default_and_reapplied_when_asked(store):
    templates.define(store, "Jabber", SOFTPHONE)
    _seed(store, "CSFOLD", description="mine", device_pool="Other", key_order="rsa")
    old = _rows(store)["CSFOLD"]
    devices = {"CSFOLD": {"user": "old"}, "CSFNEW": {"user": "new"}}
    first = templates.apply(store, "Jabber", devices, via="template", now=NOW)
    assert first["created"] == ["CSFNEW"] and first["kept"] == ["CSFOLD"] and first["updated"] == []
    assert _rows(store)["CSFOLD"] == old  # not a column touched, not even updated_at
    again = templates.apply(store, "Jabber", devices, via="template", existing="reapply", now=NOW)
    assert again["updated"] == ["CSFOLD"] and again["counts"]["unchanged"] == 1
    row = _rows(store)["CSFOLD"]
    assert (row["description"], row["device_pool"], row["key_order"], row["operation"], row["operation_deadline"]) == (
        "Softphone of old", "Soft", "ec_preferred", "install_upgrade", "2026-12-15T12:00:00Z")
    # The relative deadline counts from the application that armed the operation, not from every re-application.
    later = templates.apply(store, "Jabber", devices, via="template", existing="reapply", now="2026-12-10T00:00:00Z")
    assert later["changed"] is False and _rows(store)["CSFOLD"]["operation_deadline"] == "2026-12-15T12:00:00Z"


def test_generated_strings_are_handed_out_once(store, tmp_path):
    templates.define(store, "Jabber", SOFTPHONE)
    devices = [(f"CSFUSER{index}", {"user": f"user{index}"}) for index in range(5)]
    checked = templates.apply(store, "Jabber", devices, via="template", check_mode=True,
                              strings_file=str(tmp_path / "check.csv"))
    assert checked["counts"]["created"] == 5 and checked["authentication_strings"] == [
        {"device_name": name, "authentication_string": "(to be generated)"} for name, _variables in devices]
    assert not os.path.exists(tmp_path / "check.csv") and _rows(store) == {}
    path = str(tmp_path / "out" / "strings.csv")
    first = templates.apply(store, "Jabber", devices, via="template", strings_file=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and first["strings_file"] == path
    with open(path, encoding="ascii") as handle:
        written = {row["device_name"]: row["authentication_string"] for row in csv.DictReader(handle)}
    assert written == {item["device_name"]: item["authentication_string"] for item in first["authentication_strings"]}
    rows = _rows(store)
    assert all(authstrings.matches(store.secret(), rows[name]["auth_salt"], rows[name]["auth_hash"], value)
               for name, value in written.items()) and len(written) == 5
    second = templates.apply(store, "Jabber", devices, via="template", existing="reapply", strings_file=path)
    assert second["authentication_strings"] == [] and second["strings_file"] is None and not second["changed"]


def test_an_invalid_application_names_the_device_and_writes_nothing(store):
    templates.define(store, "Jabber", SOFTPHONE)
    before = _events(store)
    cases = [
        (["CSFA", "csfa"], "devices[1] repeats devices[0]"),
        (["CSFA", "SEP12"], "devices[1] must be SEP"),
        ([("CSFA", {"user": "a"}), ("CSFB", {})], "phone CSFB: description uses the placeholder {user}"),
        ([("CSFA", {"user": "a\x07"})], "phone CSFA: description must not contain control characters"),
        ([("CSFA", {"user": ["a", "b"]})], "phone CSFA: variables.user must be one text value"),
        ("CSFA", "devices must be a list of device names"),
    ]
    for devices, message in cases:
        with pytest.raises(ValidationError) as raised:
            templates.apply(store, "Jabber", devices, via="template")
        assert str(raised.value).startswith(message), str(raised.value)
    for option, value, message in (("via", "mail", "via must be one of"), ("existing", "replace", "existing must be")):
        with pytest.raises(ValidationError, match=f"^{message}"):
            templates.apply(store, "Jabber", ["CSFA"], **dict({"via": "template"}, **{option: value}))
    assert _rows(store) == {} and _events(store) == before


def test_audit_of_an_application(store):
    templates.define(store, "Jabber", SOFTPHONE)
    templates.apply(store, "Jabber", {"CSFA": {"user": "a"}}, via="ldap")
    with store.read() as tx:
        events = tx.query("SELECT action, subject, details FROM audit_events WHERE action LIKE ? OR action LIKE ? "
                          "ORDER BY id", ("phone.%", "template.%"))
    assert [(event["action"], event["subject"]) for event in events] == [
        ("template.define", "Jabber"), ("phone.create", "CSFA"), ("template.apply", "Jabber")]
    assert '"via": "ldap"' in events[1]["details"] and '"via": "ldap"' in events[2]["details"]


TEMPLATE_SETTINGS = st.fixed_dictionaries({}, optional={
    "description": st.sampled_from(["Softphone of {user}", "{device_name} ({template})", "Lobby"]),
    "device_pool": st.sampled_from(["HQ", "Soft"]),
    "security_mode": st.sampled_from(v.SECURITY_MODES),
    "certificate_operation": st.sampled_from(v.OPERATIONS),
    "authentication_mode": st.sampled_from(v.AUTH_MODES),
    "key_order": st.sampled_from(v.KEY_ORDERS),
    "rsa_key_size": st.sampled_from(v.RSA_KEY_SIZES),
    "ec_key_size": st.sampled_from(v.EC_KEY_SIZES),
    "operation_completes_in_days": st.integers(*v.DEADLINE_DAYS),
    "authentication_string": st.sampled_from(["2468", "4711081512"]),
    "generate_authentication_string": st.just(True),
})
SEED_SETTINGS = st.fixed_dictionaries({}, optional={
    "description": st.just("mine"),
    "device_pool": st.sampled_from(["HQ", "Old"]),
    "certificate_operation": st.sampled_from(("none", "install_upgrade", "delete")),
    "key_order": st.sampled_from(v.KEY_ORDERS),
})
NAMES = [f"CSFUSER{index}" for index in range(8)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=TEMPLATE_SETTINGS, chosen=st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True),
       seeded=st.dictionaries(st.sampled_from(NAMES), SEED_SETTINGS, max_size=4),
       existing=st.sampled_from(v.TEMPLATE_EXISTING))
def test_property_applying_twice_changes_nothing_the_second_time(template, chosen, seeded, existing):
    try:
        templates.check_template(template)
    except ValidationError:
        assume(False)
    directory = tempfile.mkdtemp(prefix="opencapf-template-property-")
    try:
        with open_store(os.path.join(directory, "capf.db"), actor="test") as store:
            for name, seed in seeded.items():
                _seed(store, name, **seed)
            templates.define(store, "T", template)
            kept_before, all_before, events_before = _rows(store, set(seeded)), _rows(store), _events(store)
            devices = [(name, {"user": name.lower()}) for name in chosen]
            try:
                first = templates.apply(store, "T", devices, via="template", existing=existing)
            except ValidationError as exc:
                # Re-applied to a device whose own settings contradict it (an operation with string mode on
                # a secure phone): refused, naming the device, with nothing written.
                assert existing == "reapply" and str(exc).startswith("phone CSFUSER")
                assert (_rows(store), _events(store)) == (all_before, events_before)
                return
            after_first, events = _rows(store), _events(store)
            second = templates.apply(store, "T", devices, via="template", existing=existing)
            assert second["changed"] is False and second["authentication_strings"] == []
            assert second["counts"]["created"] == second["counts"]["updated"] == 0
            assert (_rows(store), _events(store)) == (after_first, events)
            assert set(first["created"]) == set(chosen) - set(seeded)
            assert len(first["authentication_strings"]) <= len(chosen)
            if existing == "keep":
                assert _rows(store, set(seeded)) == kept_before
            loaded = templates.load(store, "T")
            for name in chosen if existing == "reapply" else set(chosen) - set(seeded):
                wanted = templates.desired_for(loaded, name, {"user": name.lower()})["settings"]
                row = after_first[name]
                wanted.pop("operation_deadline", None)  # counts from the application (checked above)
                assert {column: row[column] for column in wanted} == wanted
                assert (row["auth_hash"] is not None) == (template.get("authentication_mode") == "auth_string")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

"""capf_device_template on both backends: check mode and diff, idempotence, the shared string kept
secret, errors naming the option with nothing written, state absent, and the documented examples."""

from __future__ import annotations

import json

import pytest
import yaml

from ansible_collections.opencapf.capf.plugins.doc_fragments.capf import ModuleDocFragment
from ansible_collections.opencapf.capf.plugins.modules import capf_device_template

from _opencapf import templates, vocabulary as v
from support.stores import query, store_exists

SOFTPHONES = {"name": "Jabber softphones", "description": "Softphone of {user}", "device_pool": "Softphones",
              "certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
              "generate_authentication_string": True, "key_order": "ec_preferred", "operation_completes_in_days": 14}


def _stored(location):
    if not store_exists(location):
        return None
    return (query(location, "SELECT name, settings, updated_at FROM device_templates ORDER BY name"),
            query(location, "SELECT count(*) AS events FROM audit_events")[0]["events"])


def test_check_mode_then_run_then_unchanged(run, location):
    args = dict(SOFTPHONES, store=location)
    checked = run(capf_device_template, args, check=True, diff=True)
    assert checked["changed"] is True and not checked["failed"]
    assert checked["diff"]["before"] == {} and checked["diff"]["after"]["operation_completes_in_days"] == 14
    assert not store_exists(location), "check mode must not even create the store"

    first = run(capf_device_template, args, diff=True)
    assert first["changed"] is True and first["name"] == "Jabber softphones"
    assert first["template"] == dict(SOFTPHONES, authentication_string_length=8)
    second = run(capf_device_template, args, diff=True)
    assert second["changed"] is False and second["diff"]["before"] == second["diff"]["after"]
    assert "diff" not in run(capf_device_template, args)

    smaller = dict({key: value for key, value in args.items() if key != "key_order"}, device_pool="Jabber")
    changed = run(capf_device_template, smaller, check=True, diff=True)
    assert changed.get("changed") is True, changed
    assert changed["diff"]["before"]["device_pool"] == "Softphones" and changed["diff"]["after"]["device_pool"] == "Jabber"
    assert "key_order" not in changed["diff"]["after"]  # a template is exactly the options given
    assert json.loads(_stored(location)[0][0]["settings"])["key_order"] == "ec_preferred"


def test_shared_string_never_leaves_the_store(run, location, capsys):
    args = {"store": location, "name": "Lobby", "certificate_operation": "install_upgrade",
            "authentication_mode": "auth_string", "authentication_string": "4711081512"}
    first = run(capf_device_template, args, diff=True)
    assert first["changed"] and first["template"]["authentication_string"] == "(new)"
    assert run(capf_device_template, args)["changed"] is False
    other = run(capf_device_template, dict(args, authentication_string="2468"), diff=True)
    assert other["changed"] and other["diff"]["after"]["authentication_string"] == "(changed)"
    assert "4711081512" not in json.dumps([first, other]) and "2468" not in json.dumps(other)
    assert "4711081512" not in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    ({"operation_completes_in_days": 4000}, "operation_completes_in_days must be 1\u20133650 days, got 4000"),
    ({"authentication_mode": "auth_string"}, "authentication_string is required when authentication_mode is auth_string"),
    ({"authentication_mode": "auth_string", "authentication_string": "12ab"}, "authentication_string must be 4\u201310 digits"),
    ({"security_mode": "authenticated", "certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
      "generate_authentication_string": True}, "authentication_mode must not be auth_string for a phone in security_mode"),
    ({"description": "Phone of {user!r}"}, "description may hold only plain placeholders"),
    ({"name": " bad/name"}, "name must be 1\u201364 letters, digits"),
    ({"rsa_key_size": 1000}, "value of rsa_key_size must be one of"),
])
def test_error_names_the_option_and_writes_nothing(run, store_path, args, message):
    location = store_path  # the options are refused before the store is written, whichever its backend
    run(capf_device_template, {"store": location, "name": "Kept", "device_pool": "HQ"})
    before = _stored(location)
    result = run(capf_device_template, dict({"store": location, "name": "Kept"}, **args))
    assert result["failed"] and message in result["msg"] and "Traceback" not in result["msg"]
    assert "12ab" not in result["msg"]
    assert _stored(location) == before


def test_state_absent(run, location):
    run(capf_device_template, dict(SOFTPHONES, store=location))
    args = {"store": location, "name": "Jabber softphones", "state": "absent"}
    checked = run(capf_device_template, args, check=True, diff=True)
    assert checked["changed"] and checked["diff"]["after"] == {} and checked["template"] is None
    assert len(_stored(location)[0]) == 1
    assert run(capf_device_template, args)["changed"] is True
    assert _stored(location)[0] == []
    assert run(capf_device_template, args)["changed"] is False


def test_documented_examples_run_and_are_idempotent(run, store_path):
    tasks = [task["opencapf.capf.capf_device_template"] for task in yaml.safe_load(capf_device_template.EXAMPLES)
             if "opencapf.capf.capf_device_template" in task]
    assert len(tasks) == 3
    first = [run(capf_device_template, dict(task, store=store_path)) for task in tasks]
    assert [result["changed"] for result in first] == [True, True, False] and not any(r["failed"] for r in first)
    assert [run(capf_device_template, dict(task, store=store_path))["changed"] for task in tasks] == [False] * 3


def test_documentation_matches_the_argument_spec():
    own = yaml.safe_load(capf_device_template.DOCUMENTATION)
    assert "opencapf.capf.capf.phone_settings" in own["extends_documentation_fragment"]
    documented = dict(yaml.safe_load(ModuleDocFragment.PHONE_SETTINGS)["options"], **own["options"])
    assert set(templates.OPTIONS) | {"name", "state"} == set(documented)
    for option, choices in (("security_mode", v.SECURITY_MODES), ("certificate_operation", v.OPERATIONS),
                            ("authentication_mode", v.AUTH_MODES), ("key_order", v.KEY_ORDERS),
                            ("rsa_key_size", v.RSA_KEY_SIZES), ("ec_key_size", v.EC_KEY_SIZES)):
        assert documented[option]["choices"] == list(choices)
    assert "%d\u2013%d days" % v.DEADLINE_DAYS in " ".join(documented["operation_completes_in_days"]["description"])

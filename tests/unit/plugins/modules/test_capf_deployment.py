"""capf_deployment on both backends: the declarative file applied in one task, as ``opencapf apply``.

* check mode plans (the plan's text as the prepared diff) and writes nothing, not even a new store;
* a run applies, a second run changes nothing;
* every generated string is handed out once: returned, or written to ``strings_file`` (0600) inside
  the change, and a file that cannot be written fails the task with nothing of the file applied;
* a file that fails while applying (a bulk name the store does not have, with ``fail_on_unmatched``)
  or that is invalid fails naming its path in the file, and leaves every table as it was;
* the module's result is the CLI's ``--json`` result for the same file and store.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.opencapf.capf.plugins.modules import capf_deployment

from _opencapf.store import open_store
from support.stores import dump, store_exists
from support.tools import run_cli

DEPLOYMENT = """\
opencapf: 1
service:
  parameters:
    validity_days: 730
phones:
  - name: SEP001122334455
    certificate_operation: install_upgrade
    authentication_mode: null_string
    device_pool: Lobby
  - name: sep001122334456
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
bulk:
  - name: lobby phones use EC keys
    query: {device_pool: Lobby}
    set: {key_order: ec_preferred}
"""


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "deploy.yml"
    path.write_text(DEPLOYMENT)
    return str(path)


def _dump(location):
    with open_store(location, read_only=True) as store:
        return dump(store)


def test_check_mode_then_apply_then_unchanged(run, location, src):
    checked = run(capf_deployment, {"store": location, "src": src}, check=True, diff=True)
    assert checked["changed"] is True and not checked["failed"], checked
    assert "+ phones SEP001122334456" in checked["diff"]["prepared"]
    assert "parameters.validity_days: 1825 -> 730" in checked["diff"]["prepared"]
    assert checked["authentication_strings"] == [] and checked["strings_file"] is None
    assert not store_exists(location), "check mode must not even create the store"

    first = run(capf_deployment, {"store": location, "src": src}, diff=True)
    assert first["changed"] is True and first["diff"] == checked["diff"]
    assert [(c["section"], c["item"], c["action"]) for c in first["changes"]] == [
        ("service", "service", "update"), ("phones", "SEP001122334455", "create"),
        ("phones", "SEP001122334456", "create"), ("bulk", "lobby phones use EC keys", "run")]
    assert first["counts"]["phones"]["created"] == 2
    (generated,) = first["authentication_strings"]
    assert generated["device_name"] == "SEP001122334456" and generated["authentication_string"].isdigit()

    second = run(capf_deployment, {"store": location, "src": src}, diff=True)
    assert (second["changed"], second["changes"], second["authentication_strings"]) == (False, [], [])
    assert second["diff"] == {"prepared": ""}
    checked_again = run(capf_deployment, {"store": location, "src": src}, check=True)
    assert checked_again["changed"] is False and "diff" not in checked_again


def test_check_mode_writes_nothing_to_an_existing_store(run, location, src, tmp_path):
    run(capf_deployment, {"store": location, "src": src})
    before = _dump(location)
    changed = tmp_path / "changed.yml"
    changed.write_text(DEPLOYMENT.replace("validity_days: 730", "validity_days: 365")
                       .replace("device_pool: Lobby", "device_pool: Hall"))
    strings = tmp_path / "strings.csv"
    checked = run(capf_deployment, {"store": location, "src": str(changed), "strings_file": str(strings)}, check=True)
    assert checked["changed"] is True and [c["item"] for c in checked["changes"]] == ["service", "SEP001122334455"]
    assert _dump(location) == before and not strings.exists()


def test_strings_file_takes_the_strings_inside_the_change(run, location, src, tmp_path):
    (tmp_path / "a-file").write_text("not a directory\n")
    blocked = str(tmp_path / "a-file" / "strings.csv")
    failed = run(capf_deployment, {"store": location, "src": src, "strings_file": blocked})
    assert failed["failed"] and failed["msg"].startswith(f"strings_file: cannot write {blocked}: "), failed
    if store_exists(location):
        assert _dump(location)["phones"] == []

    strings = tmp_path / "out" / "strings.csv"
    applied = run(capf_deployment, {"store": location, "src": src, "strings_file": str(strings)})
    assert applied["changed"] and applied["authentication_strings"] == [] and applied["strings_file"] == str(strings)
    assert stat.S_IMODE(os.stat(strings).st_mode) == 0o600
    rows = strings.read_text().splitlines()
    assert rows[0] == "device_name,authentication_string" and rows[1].startswith("SEP001122334456,")
    assert rows[1].split(",")[1] not in json.dumps(applied)


def test_a_file_that_fails_while_applying_changes_nothing(run, location, src, tmp_path):
    run(capf_deployment, {"store": location, "src": src})
    before = _dump(location)
    bad = tmp_path / "bad.yml"
    bad.write_text(DEPLOYMENT.replace("validity_days: 730", "validity_days: 365")
                   + "  - query: {names: [SEP001122334455, SEP00112233445F]}\n    set: {description: x}\n")
    failed = run(capf_deployment, {"store": location, "src": str(bad), "fail_on_unmatched": True})
    assert failed["failed"] and failed["msg"] == (
        "bulk[1].query.names names 1 device(s) that are not in the store: SEP00112233445F; nothing was changed "
        "(fail_on_unmatched)"), failed
    assert _dump(location) == before

    warned = run(capf_deployment, {"store": location, "src": str(bad)}, check=True)
    assert warned["changed"] and warned["warnings"] == [
        "bulk[1].query.names: 1 device name(s) not in the store were ignored: SEP00112233445F"]


@pytest.mark.parametrize("body,message", [
    ("opencapf: 1\nphones:\n  - device_name: SEP001122334455\n",
     "src: {src} is not a valid opencapf file:\n  phones[0].device_name: is not a known field\n"
     "  phones[0].name: is required"),
    ("opencapf: 1\nservice:\n  parameters:\n    validity_days: 2000\n",
     "src: {src} is not a valid opencapf file:\n  service.parameters.validity_days: "),
    ("opencapf: 1\ntrust:\n  - path: missing.pem\n    trust_store: capf-trust\n",
     "trust[0].path: cannot read certificate file "),
])
def test_a_bad_file_names_its_path_and_rule(run, location, tmp_path, body, message):
    path = tmp_path / "bad.yml"
    path.write_text(body)
    failed = run(capf_deployment, {"store": location, "src": str(path)})
    assert failed["failed"] and failed["msg"].startswith(message.format(src=path)), failed
    assert "Traceback" not in json.dumps(failed)


def test_the_module_reports_what_the_cli_reports(run, src, tmp_path):
    """The same file on two fresh SQLite stores, one by the module, one by ``opencapf --json apply``:
    the same result, but for where the generated strings went."""
    stores = {}
    for name in ("module", "cli"):
        stores[name] = tmp_path / name
        stores[name].mkdir(mode=0o700)
    module = run(capf_deployment, {"store": str(stores["module"] / "capf.db"), "src": src})
    cli = json.loads(run_cli("--store", str(stores["cli"] / "capf.db"), "--json", "apply", src, check=True).stdout)
    strings = {"authentication_strings", "strings_file", "warnings"}  # a module's warnings are the task's
    assert cli["warnings"] == [] and "warnings" not in module
    assert {key: value for key, value in module.items() if key in cli and key not in strings} == \
        {key: value for key, value in cli.items() if key not in strings}
    assert sorted(cli["authentication_strings"]) == [item["device_name"] for item in module["authentication_strings"]]

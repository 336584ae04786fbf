"""plan/apply of a declarative file through the CLI and through the playbook, against a real store.

Everything on an SQLite store; on a PostgreSQL store too, the file planned, applied and planned again
through the CLI and applied through the playbook (the modules). The rest runs on SQLite only, for CI
time: the errors are found in the file, unmatched names are the modules' (test_unmatched_names.py, on
both), and ``plan writes no byte`` watches the store's files (a PostgreSQL store opened read-only:
test_postgresql.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from _opencapf.store import open_store
from support.stores import dump, query
from support.tools import run_cli

DEPLOYMENT = """\
opencapf: 1
service:
  parameters:
    validity_days: 730
    keepalive_minutes: 20
phones:
  - name: SEP001122334455
    certificate_operation: install_upgrade
    authentication_mode: null_string
  - name: sep001122334456
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
  - name: SEP001122334457
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    authentication_string: "123456"
    device_pool: Lobby
bulk:
  - name: lobby phones use EC keys
    query: {device_pool: Lobby}
    set: {key_order: ec_preferred}
"""


@pytest.fixture
def deployment(store_cli, tmp_path):
    """The CLI options naming the test's store, initialised, and the deployment file."""
    path = tmp_path / "deploy.yml"
    path.write_text(DEPLOYMENT)
    run_cli(*store_cli, "init", check=True)
    return store_cli, str(path)


def test_plan_apply_then_no_changes(store_options, tmp_path):
    """Once per backend: an SQLite file, then a PostgreSQL database with its state directory."""
    path = tmp_path / "deploy.yml"
    path.write_text(DEPLOYMENT)
    path = str(path)
    run_cli(*store_options, "init", check=True)
    planned = run_cli(*store_options, "plan", path, check=True).stdout
    assert "+ phones SEP001122334456" in planned and "parameters.validity_days: 1825 -> 730" in planned
    assert run_cli(*store_options, "plan", "--detailed-exitcode", path).returncode == 2
    strings = tmp_path / "strings.csv"
    applied = json.loads(run_cli(*store_options, "--json", "apply", path, "--strings-file", str(strings),
                                 check=True).stdout)
    assert applied["changed"] and applied["counts"]["phones"]["created"] == 3
    assert "123456" not in json.dumps(applied)
    assert stat.S_IMODE(os.stat(strings).st_mode) == 0o600
    rows = strings.read_text().splitlines()
    assert rows[0] == "device_name,authentication_string" and rows[1].startswith("SEP001122334456,")
    assert run_cli(*store_options, "plan", path, check=True).stdout.strip() == "no changes"
    assert run_cli(*store_options, "plan", "--detailed-exitcode", path).returncode == 0
    again = json.loads(run_cli(*store_options, "--json", "apply", path, check=True).stdout)
    assert again["changed"] is False


def test_a_strings_file_that_cannot_be_written_fails_the_apply_and_loses_no_string(deployment, tmp_path):
    """The store keeps only a keyed hash of a generated string: an apply whose ``--strings-file`` cannot
    be written must not have generated it. It exits 1 naming the flag, every table stays as it was, and
    the same apply with a writable file then hands out every string."""
    store, path = deployment
    location, state_dir = store[1], store[3]
    (tmp_path / "a-file").write_text("not a directory\n")
    with open_store(location, state_dir=state_dir, read_only=True) as opened:
        before = dump(opened)
    blocked = str(tmp_path / "a-file" / "strings.csv")
    result = run_cli(*store, "apply", path, "--strings-file", blocked)
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.startswith(f"opencapf: error: --strings-file: cannot write {blocked}: "), result.stderr
    with open_store(location, state_dir=state_dir, read_only=True) as opened:
        assert dump(opened) == before
    strings = tmp_path / "strings.csv"
    run_cli(*store, "apply", path, "--strings-file", str(strings), check=True)
    assert strings.read_text().splitlines()[1].startswith("SEP001122334456,")


def test_plan_changes_nothing(deployment):
    store, path = deployment
    run_cli(*store, "plan", path, check=True)
    info = run_cli(*store, "plan", path, check=True).stdout
    assert "+ phones SEP001122334455" in info


@pytest.mark.parametrize("version", ["previous", "current", "missing"])
def test_plan_writes_no_byte(tmp_path, version):
    """Invariant: ``plan`` writes nothing to the store or beside it, whatever the store's schema
    version, and a missing store stays missing; the plan is the same in every case. SQLite only: it
    watches the store's files."""
    from _opencapf.store.migrations import MIGRATIONS
    from support.stores import populated_store
    from support.tools import snapshot

    directory = str(tmp_path / "state")
    if version == "missing":
        os.mkdir(directory, 0o700)
        store = os.path.join(directory, "capf.db")
    else:
        store = populated_store(directory, MIGRATIONS[-2 if version == "previous" else -1][0])
    path = tmp_path / "deploy.yml"
    path.write_text(DEPLOYMENT)
    before = snapshot(directory)
    planned = json.loads(run_cli("--store", store, "--json", "plan", str(path), check=True).stdout)
    assert planned["changed"] and planned["counts"]["phones"]["created"] == (3 if version == "missing" else 2)
    assert snapshot(directory) == before


def test_schema_error_names_path_and_changes_nothing(deployment, tmp_path):
    store, _path = deployment
    bad = tmp_path / "bad.yml"
    bad.write_text(DEPLOYMENT.replace('"123456"', '"12"'))
    result = run_cli(*store, "apply", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "phones[2].authentication_string: must be 4\u201310 digits" in result.stderr
    assert run_cli(*store, "plan", str(tmp_path / "bad.yml")).returncode == 1
    good = tmp_path / "good.yml"
    good.write_text(DEPLOYMENT)
    assert "+ phones SEP001122334455" in run_cli(*store, "plan", str(good), check=True).stdout


def test_engine_rule_errors_carry_the_file_path(deployment, tmp_path):
    store, _path = deployment
    bad = tmp_path / "bad.yml"
    bad.write_text("opencapf: 1\nphones:\n  - name: SEP001122334455\n    security_mode: encrypted\n"
                   "    certificate_operation: install_upgrade\n    authentication_mode: auth_string\n"
                   "    authentication_string: '1234'\n")
    result = run_cli(*store, "apply", str(bad))
    assert result.returncode == 1
    assert "phones[0].authentication_mode must not be auth_string" in result.stderr


def test_schema_command_prints_json_schema(deployment):
    store, _path = deployment
    printed = json.loads(run_cli(*store, "schema", check=True).stdout)
    assert printed["properties"]["opencapf"]["const"] == 1


@pytest.mark.both_backends
def test_playbook_applies_the_same_file_with_the_same_result(deployment, tmp_path):
    from support.ansible_runner import changed_tasks, install_collection, playbook
    from support.tools import ROOT

    store, path = deployment
    collections = install_collection(str(tmp_path / "collections"))
    apply = os.path.join(ROOT, "playbooks", "apply_deployment.yml")
    location, state = store[1], {"OPENCAPF_STATE_DIR": store[3]}
    first = playbook(collections, apply, "-e", f"deployment_file={path}", "-e", f"capf_store={location}", env=state)
    assert set(changed_tasks(first)) == {"Service parameters, online CA and CAPF certificate", "Phones", "Bulk jobs"}
    # The CLI sees the store exactly where its own apply would have left it.
    assert run_cli(*store, "plan", path, check=True).stdout.strip() == "no changes"
    second = playbook(collections, apply, "-e", f"deployment_file={path}", "-e", f"capf_store={location}", env=state)
    assert changed_tasks(second) == []


@pytest.mark.parametrize("body,message", [
    ("trust:\n  - path: missing.pem\n    trust_store: capf-trust\n",
     r"^opencapf: error: trust\[0\]\.path: cannot read certificate file .*missing\.pem: No such file or directory$"),
    ("trust:\n  - path: notpem.txt\n    trust_store: capf-trust\n",
     r"^opencapf: error: trust\[0\]\.path contains no PEM certificate"),
    ("service:\n  capf_certificate:\n    certificate: x\n    private_key_file: missing.key\n",
     r"^opencapf: error: service\.capf_certificate\.private_key_file: cannot read key file .*missing\.key: "
     r"No such file or directory$"),
])
def test_file_fields_errors_name_their_path_in_the_file(deployment, tmp_path, body, message):
    import re

    store, _path = deployment
    (tmp_path / "notpem.txt").write_text("not a certificate\n")
    path = tmp_path / "files.yml"
    path.write_text("opencapf: 1\n" + body)
    for verb in ("plan", "apply"):
        result = run_cli(*store, verb, str(path))
        assert result.returncode == 1 and re.match(message, result.stderr.strip()), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_bulk_names_not_in_the_store_warn_or_fail(deployment, tmp_path):
    store, path = deployment
    run_cli(*store, "apply", path, check=True)
    bulk = tmp_path / "bulk.yml"
    bulk.write_text("opencapf: 1\nbulk:\n  - query: {names: [SEP001122334455, SEP00112233445F]}\n"
                    "    set: {description: renamed}\n")
    planned = run_cli(*store, "plan", str(bulk), check=True)
    assert planned.stderr == ("opencapf: warning: bulk[0].query.names: 1 device name(s) not in the store were "
                              "ignored: SEP00112233445F\n")
    refused = run_cli(*store, "apply", "--fail-on-unmatched", str(bulk))
    assert refused.returncode == 1 and refused.stderr == (
        "opencapf: error: bulk[0].query.names names 1 device(s) that are not in the store: SEP00112233445F; nothing "
        "was changed (fail_on_unmatched)\n")
    bulk.write_text(bulk.read_text() + "    fail_on_unmatched: true\n")
    assert run_cli(*store, "apply", str(bulk)).returncode == 1
    assert query(store[1], "SELECT COUNT(*) AS n FROM phones WHERE description = 'renamed'", state_dir=store[3]) == [
        {"n": 0}]


def test_apply_is_all_or_nothing(store_options, tmp_path):
    """Once per backend: a file whose last section fails for a reason only the store knows (a bulk query
    naming a phone it does not have) exits 1 with the error at its path in the file and no traceback, and
    leaves every table as it was and no strings file, though the sections before it had changes to make;
    plan shows the same error; the file without the failing name applies in full."""
    run_cli(*store_options, "init", check=True)
    location, state_dir = store_options[1], store_options[3]
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    bad = tmp_path / "bad.yml"
    bad.write_text(DEPLOYMENT + "  - name: everyone gets a string\n"
                   "    query: {names: [SEP001122334455, SEP00112233445F]}\n"
                   "    set: {authentication_mode: auth_string}\n"
                   "    generate_authentication_strings: true\n"
                   f"    strings_file: {out / 'bulk-strings.csv'}\n"
                   "    fail_on_unmatched: true\n")
    with open_store(location, state_dir=state_dir, read_only=True) as store:
        before = dump(store)
    error = ("opencapf: error: bulk[1].query.names names 1 device(s) that are not in the store: SEP00112233445F; "
             "nothing was changed (fail_on_unmatched)\n")
    for verb, extra in (("plan", ()), ("apply", ("--strings-file", str(out / "strings.csv")))):
        result = run_cli(*store_options, verb, str(bad), *extra)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", error), verb
    with open_store(location, state_dir=state_dir, read_only=True) as store:
        assert dump(store) == before
    assert os.listdir(out) == []
    bad.write_text(bad.read_text().replace(", SEP00112233445F", ""))
    applied = json.loads(run_cli(*store_options, "--json", "apply", str(bad), check=True).stdout)
    assert applied["counts"]["phones"]["created"] == 3 and sorted(applied["authentication_strings"]) == [
        "SEP001122334455", "SEP001122334456"]
    assert (out / "bulk-strings.csv").read_text().startswith("device_name,authentication_string\nSEP001122334455,")

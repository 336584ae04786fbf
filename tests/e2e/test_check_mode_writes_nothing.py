"""Check mode writes no byte: a real ``ansible-playbook --check`` of every module, against a store at
the previous schema version and a current one, leaves every file in the store's directory (the
store, -wal, -shm, secret.key, keys/, lock files: names, modes, times and contents) as it was."""

from __future__ import annotations

import json
import os

import pytest

from _opencapf import templates
from _opencapf.store import Store, open_store
from _opencapf.store.migrations import LATEST_VERSION, MIGRATIONS
from _opencapf.store.sqlite import SqliteBackend
from support import certfactory
from support.ansible_runner import install_collection, playbook, task_results
from support.slapd import SYNC_DN
from support.stores import PHONE, populated_store
from support.tools import ROOT, snapshot

PREVIOUS_VERSION = MIGRATIONS[-2][0]  # the schema version before the newest migration
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules")) if name.startswith("capf_"))


def module_tasks(outside: str, directory: dict | None = None) -> dict[str, list[dict]]:
    """For each module, check-mode tasks that would change the store (or read it) in a real run;
    ``directory``: the capf_ldap_sync options naming a real directory."""
    root, _key = certfactory.make("Check Mode Root CA")
    signed = os.path.join(outside, "signed.pem")
    with open(signed, "w", encoding="ascii") as handle:
        handle.write(certfactory.pem(root))
    deployment = os.path.join(outside, "deploy.yml")
    with open(deployment, "w", encoding="ascii") as handle:
        handle.write(f"""opencapf: 1
trust:
  - path: signed.pem
    trust_store: capf-trust
service:
  parameters:
    validity_days: 730
phones:
  - name: {PHONE}
    device_pool: Hall
  - name: SEP00AABBCCDD02
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
""")
    return {
        "capf_deployment": [{"src": deployment, "strings_file": os.path.join(outside, "strings.csv")}],
        "capf_phone": [
            {"name": PHONE, "authentication_mode": "auth_string", "authentication_string": "87654321"},
            {"name": "SEP00AABBCCDD01", "certificate_operation": "install_upgrade",
             "authentication_mode": "auth_string", "generate_authentication_string": True},
            {"name": PHONE, "state": "absent"},
        ],
        "capf_bulk_update": [
            {"query": {"names": [PHONE]}, "set": {"key_order": "ec_preferred"}, "authentication_string": "24681357"},
            {"query": {"names": [PHONE]}, "set": {"certificate_operation": "delete"}, "run_at": "2099-01-01T00:00:00Z"},
        ],
        "capf_device_template": [
            {"name": "Softphones", "certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
             "authentication_string": "13572468", "operation_completes_in_days": 7},
            {"name": "Softphones", "state": "absent"},
        ],
        "capf_info": [{}, {"gather": ["phones"], "authentication_string": "12345678"}],
        "capf_offline_ca": [
            {"state": "exported", "path": os.path.join(outside, "csr-out")},
            {"state": "imported", "src": [signed], "fail_on_problems": False},
        ],
        "capf_service": [
            {"validity_days": 730, "capf_certificate": {"key_type": "ec256"},
             "online_ca": {"hostname": "ca.example.com", "type": "est", "profile_label": "phones", "username": "capf",
                           "password": "S3cret-check"}},
            {"monitor_warn_days": [14, 3], "monitor_recipients": ["ops@example.com"], "monitor_sender": "capf@example.com",
             "monitor_smtp_host": "smtp.example.com", "monitor_smtp_username": "capf",
             "monitor_smtp_password": "S3cret-smtp"},
            {"state": "started"},
        ],
        "capf_ldap_sync": [directory or {}, dict(directory or {}, absent_devices="remove", sync_interval_minutes=60)],
        "capf_stale_lsc": [{}, {"devices": [PHONE]}],
        "capf_trust_cert": [{"ca_root": certfactory.pem(root), "description": "check mode"}],
    }


def _directory(request) -> dict:
    """capf_ldap_sync options naming users of the real slapd the tests start."""
    server = request.getfixturevalue("slapd_server")
    base = server.new_base({"checkmode": ()})
    return {"name": "corp", "urls": [server.ldaps_url], "ca_file": server.ca_file, "bind_dn": SYNC_DN,
            "bind_password": server.sync_password, "search_base": base, "device_template": "jabber"}


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    return install_collection(str(tmp_path_factory.mktemp("collections")))


@pytest.mark.parametrize("module", MODULES)
def test_check_mode_of_every_module_writes_no_byte(module, collections, tmp_path, request):
    outside = str(tmp_path / "outside")
    os.mkdir(outside, 0o700)
    directory = _directory(request) if module == "capf_ldap_sync" else None
    tasks = module_tasks(outside, directory)
    assert sorted(tasks) == MODULES, "every module has check-mode tasks here"
    stores = {"previous": populated_store(str(tmp_path / "previous"), PREVIOUS_VERSION),
              "current": populated_store(str(tmp_path / "current"), LATEST_VERSION)}
    if directory is not None:  # the template the directory's devices get, in both stores
        for store_path in stores.values():
            with Store(SqliteBackend(store_path), os.path.dirname(store_path), "test") as store:
                templates.define(store, directory["device_template"], {"certificate_operation": "install_upgrade"})
    before = {name: snapshot(os.path.dirname(path)) for name, path in stores.items()}
    book = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": f"task {index}", f"opencapf.capf.{module}": dict(arguments, store="{{ item }}"),
         "loop": [stores["previous"], stores["current"]], "check_mode": True, "diff": True}
        for index, arguments in enumerate(tasks[module])]}]
    path = tmp_path / "check.yml"
    path.write_text(json.dumps(book))
    run = playbook(collections, str(path), "--check")

    for index in range(len(tasks[module])):
        (result,) = task_results(run, f"task {index}")
        previous, current = result["results"]
        assert not previous.get("failed") and not current.get("failed"), (previous.get("msg"), current.get("msg"))
        # The store one schema version behind plans exactly as the current one.
        assert previous["changed"] == current["changed"], (previous, current)
    for name, store_path in stores.items():
        assert snapshot(os.path.dirname(store_path)) == before[name], f"check mode wrote to the {name} store"
    assert not os.path.exists(os.path.join(outside, "strings.csv")), "check mode wrote a strings file"
    with open_store(stores["previous"], read_only=True) as store:
        assert store.schema_version() == LATEST_VERSION  # read through the migrated copy ...
    with Store(SqliteBackend(stores["previous"], read_only=True), str(tmp_path), "test") as store:
        assert store.schema_version() == PREVIOUS_VERSION  # ... the store itself is left as it was

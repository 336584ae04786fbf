"""Every module, in check mode and for real, refuses a store file or directory (SQLite) or the state
directory of a PostgreSQL store that the group or others may write, with one line naming the path and
its mode, and leaves it as it was (the files, and the database)."""

from __future__ import annotations

import importlib
import os

import pytest

from _opencapf.store import open_store
from support.stores import query, store_exists

MODULE_ARGS = {
    "capf_bulk_update": {"query": {"names": ["SEP001122334455"]}, "set": {"key_order": "ec_preferred"}},
    "capf_deployment": {"src": "{outside}/deploy.yml"},  # the store is refused before the file is read
    "capf_device_template": {"name": "Softphones", "device_pool": "Soft"},
    "capf_info": {},
    "capf_ldap_sync": {"name": "corp", "urls": ["ldaps://localhost:1"], "search_base": "dc=example,dc=org",
                       "device_template": "jabber"},
    "capf_offline_ca": {"state": "exported", "path": "{outside}/csr-out"},
    "capf_phone": {"name": "SEP001122334455", "certificate_operation": "install_upgrade"},
    "capf_service": {"validity_days": 730},
    "capf_stale_lsc": {},
    "capf_trust_cert": {"remove_legacy_mic_roots": True},
}
MODULES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "modules")


def test_every_module_is_covered():
    assert sorted(MODULE_ARGS) == sorted(name[:-3] for name in os.listdir(MODULES_DIR) if name.startswith("capf_"))


def _entries(directory):
    return {name: (os.lstat(os.path.join(directory, name)).st_mode, os.lstat(os.path.join(directory, name)).st_mtime_ns)
            for name in os.listdir(directory)}


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("case", ["store", "store directory", "new store in directory"])
@pytest.mark.parametrize("name", sorted(MODULE_ARGS))
def test_module_refuses_a_store_the_group_or_others_can_write(run, tmp_path, name, case, check):
    """The modes of a store file and its directory only exist for SQLite."""
    module = importlib.import_module(f"ansible_collections.opencapf.capf.plugins.modules.{name}")
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    store = str(directory / "capf.db")
    if case != "new store in directory":
        open_store(store).close()
    target, mode = (store, 0o664) if case == "store" else (str(directory), 0o777)
    os.chmod(target, mode)
    before = _entries(directory)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    args = {key: value.format(outside=outside) if isinstance(value, str) else value
            for key, value in MODULE_ARGS[name].items()}
    result = run(module, dict(args, store=store), check=check)
    what = "store" if case == "store" else "store directory"
    fix = "0600 or 0640" if case == "store" else "0700 or 0750"
    assert result["failed"], result
    assert result["msg"] == f"{what} {target} is writable by group or others (mode {mode:04o}); make it {fix}"
    assert _entries(directory) == before


def _database(location, reader):
    """The database's rows, read with a private state directory (``reader``): the tested one is refused."""
    if not store_exists(location, str(reader)):
        return None
    return [query(location, f"SELECT * FROM {table} ORDER BY 1", state_dir=str(reader))
            for table in ("schema_migrations", "phones", "audit_events")]


@pytest.mark.parametrize("case, check", [("state directory", False), ("state directory", True), ("new store", True)],
                         ids=["state directory-run", "state directory-check", "new store-check"])
@pytest.mark.parametrize("name", sorted(MODULE_ARGS))
def test_module_refuses_a_postgresql_state_directory_the_group_or_others_can_write(run, tmp_path, postgres_dsn,
                                                                                   monkeypatch, name, case, check):
    module = importlib.import_module(f"ansible_collections.opencapf.capf.plugins.modules.{name}")
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("OPENCAPF_STATE_DIR", str(directory))
    if case == "state directory":  # a store in use: its schema, a phone, secret.key and keys/ beside it
        assert run(importlib.import_module("ansible_collections.opencapf.capf.plugins.modules.capf_phone"),
                   {"store": postgres_dsn, "name": "SEP0000000000AA", "authentication_mode": "auth_string",
                    "authentication_string": "24681357"})["changed"]
    os.chmod(directory, 0o777)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    before = (_entries(directory), _database(postgres_dsn, outside))
    args = {key: value.format(outside=outside) if isinstance(value, str) else value
            for key, value in MODULE_ARGS[name].items()}
    result = run(module, dict(args, store=postgres_dsn), check=check)
    assert result["failed"], result
    assert result["msg"] == (f"state directory {os.path.realpath(directory)} is writable by group or others "
                             "(mode 0777); make it 0700 or 0750")
    assert (_entries(directory), _database(postgres_dsn, outside)) == before

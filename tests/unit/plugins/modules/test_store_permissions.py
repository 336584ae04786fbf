"""Every module, in check mode and for real, refuses a store file or directory that the group or
others may write, with one line naming the path and its mode, and leaves it as it was."""

from __future__ import annotations

import importlib
import os

import pytest

from _opencapf.store import open_store

MODULE_ARGS = {
    "capf_bulk_update": {"query": {"names": ["SEP001122334455"]}, "set": {"key_order": "ec_preferred"}},
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

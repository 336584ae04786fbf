"""Module tests: import the checkout as ``ansible_collections.opencapf.capf`` and run modules in-process."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def _collection_path() -> str:
    """A directory holding ``ansible_collections/opencapf/capf`` -> this checkout (a symlink), removed
    when the test process ends (the link only: ``rmtree`` does not follow it)."""
    base = tempfile.mkdtemp(prefix="opencapf-collections-")
    atexit.register(shutil.rmtree, base, True)
    namespace = os.path.join(base, "ansible_collections", "opencapf")
    os.makedirs(namespace)
    os.symlink(ROOT, os.path.join(namespace, "capf"))
    return base


if "ansible_collections.opencapf.capf" not in sys.modules:
    sys.path.insert(0, _collection_path())

from ansible.module_utils.common import warnings as ansible_warnings  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402


class ModuleExit(Exception):
    """What a module run ended with: its JSON result and whether it failed."""

    def __init__(self, result: dict, failed: bool):
        super().__init__(result.get("msg", ""))
        self.result = result
        self.failed = failed


def run_module(module, args: dict, capsys, *, check: bool = False, diff: bool = False) -> dict:
    """Run ``module.main()`` with ``args``; return the result dict (``failed`` set on failure).
    ``warnings`` holds the task warnings of this run as plain messages."""
    ansible_warnings._global_warnings.clear()  # pylint: disable=protected-access  # one process, many runs
    payload = dict(args)
    if check:
        payload["_ansible_check_mode"] = True
    if diff:
        payload["_ansible_diff"] = True
    capsys.readouterr()
    with patch_module_args(payload):
        with pytest.raises(SystemExit) as stopped:
            module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result.setdefault("failed", stopped.value.code != 0)
    if "warnings" in result:
        result["warnings"] = [item["event"]["msg"] if isinstance(item, dict) else item for item in result["warnings"]]
    return result


@pytest.fixture
def location(store_location, state_dir, monkeypatch):
    """The ``store`` option of a module test, once per backend: an SQLite file path, then a fresh
    PostgreSQL database (its state directory given as the environment would)."""
    if store_location.startswith("postgresql:"):
        monkeypatch.setenv("OPENCAPF_STATE_DIR", state_dir)
    return store_location


@pytest.fixture
def run(capsys):
    def _run(module, args, **kwargs):
        return run_module(module, args, capsys, **kwargs)
    return _run

"""The fleet playbook for real: ansible-playbook configures the service, uploads trust and declares
phones; check mode changes nothing, the run converges, the second run changes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from support import certfactory
from conftest import ROOT

PHONES = [{"name": f"SEP0000000001{index:02X}", "device_pool": "HQ"} for index in range(4)]


@pytest.fixture
def collections(tmp_path):
    namespace = tmp_path / "collections" / "ansible_collections" / "opencapf"
    namespace.mkdir(parents=True)
    os.symlink(ROOT, namespace / "capf")
    return str(tmp_path / "collections")


def _playbook(collections, tmp_path, extra_vars, *flags):
    if shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None:
        raise AssertionError("ansible-playbook is not installed next to this Python")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-c", "local", "-i", "localhost,",
               os.path.join(ROOT, "playbooks", "fleet.yml"), "-e", json.dumps(extra_vars), *flags]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def _changed(output: str) -> int:
    recap = re.search(r"^localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", output, re.M)
    assert recap, output[-3000:]
    return int(recap.group(1))


def test_fleet_playbook_check_run_rerun(collections, tmp_path):
    root, _key = certfactory.make("Fleet Root CA")
    ca_root = tmp_path / "root.pem"
    ca_root.write_text(certfactory.pem(root))
    store = str(tmp_path / "state" / "capf.db")
    extra = {"capf_store": store, "capf_ca_root": str(ca_root), "capf_phones": PHONES,
             "capf_listen_addresses": ["127.0.0.1"], "capf_port": 38043}

    checked = _playbook(collections, tmp_path, extra, "--check", "--diff")
    assert _changed(checked) >= 3
    assert not os.path.exists(store), "check mode must not create the store"

    first = _playbook(collections, tmp_path, extra)
    assert _changed(first) >= 3
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM phones WHERE operation = 'install_upgrade' AND "
                          "operation_status = 'pending'").fetchone()[0] == len(PHONES)
        assert db.execute("SELECT count(*) FROM trust_certificates").fetchone()[0] == 2
        assert db.execute("SELECT key_type FROM capf_certificates WHERE active = 1").fetchone()[0] == "ec256"

    second = _playbook(collections, tmp_path, extra)
    assert _changed(second) == 0

"""No password or authentication string leaks: not in -vvv output, module results, audit or the store."""

from __future__ import annotations

import glob
import json
import os
import sqlite3

from support.ansible_runner import install_collection, playbook
from support.tools import run_cli

SECRETS = ("73195284", "90817263", "S3cr3t-Pa55-w0rd", "55550000")


def test_secrets_never_appear(tmp_path):
    collections = install_collection(str(tmp_path / "collections"))
    store = str(tmp_path / "state" / "capf.db")
    run_cli("--store", store, "init", check=True)
    csv_file = tmp_path / "phones.csv"
    csv_file.write_text("device_name,device_pool,certificate_operation,authentication_mode,authentication_string\n"
                        "SEP00AA00BB00CD,Lobby,install_upgrade,auth_string,55550000\n"
                        "SEP00AA00BB00CE,Lobby,install_upgrade,null_string,\n")
    run = playbook(collections, os.path.join(os.path.dirname(__file__), "playbooks", "secrets.yml"), "-vvv",
                   "-e", f"capf_store={store}", "-e", f"csv_file={csv_file}",
                   env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"})
    output = run.stdout + run.stderr
    for secret in SECRETS:
        assert secret not in output, f"{secret} leaked into ansible-playbook -vvv output"

    # The generated string is shown exactly where it was asked for, and only there.
    generated = [line for line in run.stdout.splitlines() if "generated.authentication_string" in line]
    assert generated, run.stdout[-3000:]

    with sqlite3.connect(store) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        audit = json.dumps(connection.execute("SELECT * FROM audit_events").fetchall())
    for secret in SECRETS:
        assert secret not in audit
    for path in glob.glob(store + "*"):
        with open(path, "rb") as handle:
            data = handle.read()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} is stored in clear in {os.path.basename(path)}"

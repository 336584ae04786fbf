"""No password or authentication string leaks: not in -vvv output, module results, audit or the store."""

from __future__ import annotations

import glob
import json
import os
import sqlite3

import pytest

from support.ansible_runner import install_collection, playbook
from support.tools import run_cli

SECRETS = ("73195284", "90817263", "S3cr3t-Pa55-w0rd", "55550000", "Smtp-Pa55-w0rd-1")


def test_secrets_never_appear(tmp_path):
    """SQLite only: besides the audit log it reads the store's files byte by byte (-wal included)."""
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


@pytest.mark.both_backends
def test_strings_never_reach_the_service_log_or_session_records(capf_server, ca_store, tmp_path, caplog):
    """Right and wrong strings over TLS with every logger at DEBUG: neither appears in a log
    record, the sessions table or the audit log (the phone's reason names the rule only)."""
    import logging

    from support.phones import phone, run_enrol
    from support.protocol import add_phone

    right, wrong = "62951413", "31415926"
    caplog.set_level(logging.DEBUG)
    add_phone(ca_store, "SEP00AA00BB00EE", operation="install_upgrade", auth_mode="auth_string", auth_string=right,
              key_order="ec")
    guesser = phone(tmp_path, "SEP00AA00BB00EE", auth_mode="auth_string", auth_string=wrong)
    assert run_enrol(guesser, capf_server).end_reason == 7
    guesser.settings.auth_string = right
    assert run_enrol(guesser, capf_server).outcome == "ok"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "auth_failed" in logged and "SEP00AA00BB00EE" in logged  # the log does record the events
    with ca_store.read() as tx:
        recorded = json.dumps([tx.query("SELECT * FROM sessions"), tx.query("SELECT * FROM audit_events"),
                               tx.query("SELECT name, operation_reason FROM phones")], default=str)
    for secret in (right, wrong):
        assert secret not in logged and secret not in recorded

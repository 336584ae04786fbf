"""The LDAP directory sync through its front ends against a real slapd: the capf_ldap_sync module in
the example playbook (LDAPS), ``opencapf ldap sync`` (StartTLS, the password from a file or the
environment, never argv), their one-line errors that change nothing, and the softphones of a synced
directory enrolling against a real ``serve`` until all hold LSCs."""

from __future__ import annotations

import asyncio
import csv
import json
import os

from support.ansible_runner import changed_tasks, install_collection, playbook, task_results
from support.protocol import openssl_verify_all
from support.slapd import SYNC_DN
from support.serving import Serving
from support.tools import ROOT, run_cli
from _opencapf import directory, templates
from _opencapf.ca import authority
from _opencapf.cli.main import main as cli_main
from _opencapf.dependencies import ec
from _opencapf.simulator.client import Target
from _opencapf.simulator.fleet import run_fleet
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import open_store

EXAMPLE = os.path.join(ROOT, "playbooks", "examples", "ldap_directory_sync.yml")


def _store_snapshot(path):
    """What a sync may write: phones, directories and their devices, secrets, audit events."""
    with open_store(path, actor="test", create=False) as store, store.read() as tx:
        return {table: tx.query(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 (fixed table names)
                for table in ("phones", "directories", "directory_devices", "secrets", "audit_events")}


def test_example_playbook_syncs_over_ldaps_plans_in_check_mode_and_fails_cleanly(tmp_path, slapd_server):
    base = slapd_server.new_base({"amy": (), "ben": ()})
    store = str(tmp_path / "state" / "capf.db")
    run_cli("--store", store, "init", check=True)
    collections = install_collection(str(tmp_path / "collections"))
    strings = tmp_path / "jabber.csv"
    extra = json.dumps({"ldap_urls": [slapd_server.ldaps_url], "ldap_ca_file": slapd_server.ca_file,
                        "ldap_bind_dn": SYNC_DN, "ldap_search_base": base, "strings_file": str(strings)})
    env = {"OPENCAPF_STORE": store, "LDAP_BIND_PASSWORD": slapd_server.sync_password}
    first = playbook(collections, EXAMPLE, "-e", extra, env=env)
    assert changed_tasks(first) == ["The softphone template", "Sync the directory"]
    result = task_results(first, "Sync the directory")[0]
    assert result["devices"] == {"created": ["CSFAMY", "CSFBEN"], "changed": [], "absent": [], "removed": []}
    assert result["directory"]["first_sync"] is True
    assert sorted(row["device_name"] for row in csv.DictReader(strings.open())) == ["CSFAMY", "CSFBEN"]
    assert slapd_server.sync_password not in first.stdout
    # A user joins; the next run in check mode plans exactly their softphone (the template task and the
    # existing devices are left alone) and writes nothing.
    slapd_server.add_user("cleo", base=base)
    unchanged = _store_snapshot(store)
    check = playbook(collections, EXAMPLE, "-e", extra, "--check", "--diff", env=env)
    assert changed_tasks(check) == ["Sync the directory"] and _store_snapshot(store) == unchanged
    planned = task_results(check, "Sync the directory")[0]
    assert planned["devices"] == {"created": ["CSFCLEO"], "changed": [], "absent": [], "removed": []}
    assert planned["diff"]["after"]["phones"]["CSFCLEO"]["certificate_operation"] == "install_upgrade"
    before = _store_snapshot(store)
    wrong = playbook(collections, EXAMPLE, "-e", extra, env=dict(env, LDAP_BIND_PASSWORD="wrong-password"),
                     check=False)
    assert wrong.returncode != 0
    message = task_results(wrong, "Sync the directory")[0]["msg"]
    assert message.startswith("bind_password: ") and "invalid credentials" in message and "\n" not in message
    assert "wrong-password" not in wrong.stdout
    assert _store_snapshot(store) == before


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The real command line in this process (its argument parsing, handlers and error lines)."""
    capsys.readouterr()
    try:
        code = cli_main(list(args))
    except SystemExit as exit_:  # usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_syncs_over_starttls_with_the_password_from_a_file_or_the_environment(tmp_path, slapd_server, capsys,
                                                                                  monkeypatch):
    base = slapd_server.new_base({"dora": (), "eli": ()})
    store = str(tmp_path / "state" / "capf.db")
    config = tmp_path / "corp.yml"
    config.write_text(json.dumps({"name": "corp", "urls": [slapd_server.ldap_url], "ca_file": slapd_server.ca_file,
                                  "bind_dn": SYNC_DN, "search_base": base, "device_template": "soft"}))
    password_file = tmp_path / "password"
    password_file.write_text(slapd_server.sync_password + "\n")
    os.chmod(password_file, 0o600)
    define_template(store)
    monkeypatch.delenv("OPENCAPF_LDAP_BIND_PASSWORD", raising=False)

    code, out, err = _cli(capsys, "--store", store, "--json", "ldap", "sync", "--config", str(config),
                          "--bind-password-file", str(password_file), "--check")
    assert code == 0 and json.loads(out)["devices"]["created"] == ["CSFDORA", "CSFELI"], err
    # The installed entry point, once: a child process with the password in its environment only.
    synced = run_cli("--store", store, "ldap", "sync", "--config", str(config),
                     env=dict(os.environ, OPENCAPF_LDAP_BIND_PASSWORD=slapd_server.sync_password))
    assert synced.returncode == 0, synced.stderr
    assert "2 created: CSFDORA, CSFELI" in synced.stdout and slapd_server.sync_password not in synced.stdout
    code, out, err = _cli(capsys, "--store", store, "ldap", "sync", "--name", "corp", "--bind-password-file",
                          str(password_file))
    assert code == 0 and "no change" in out, err
    code, out, err = _cli(capsys, "--store", store, "ldap", "list")
    assert code == 0 and out.startswith("corp: last sync ") and "next not scheduled" in out, err

    before = _store_snapshot(store)
    other_ca = tmp_path / "other.yml"
    other_ca.write_text(config.read_text().replace(slapd_server.ca_file, slapd_server.other_ca_file))
    unreachable = tmp_path / "unreachable.yml"
    unreachable.write_text(config.read_text().replace(slapd_server.ldap_url, "ldap://localhost:1"))
    wrong_password = tmp_path / "wrong"
    wrong_password.write_text("wrong-password\n")
    os.chmod(wrong_password, 0o600)
    for arguments, start in (
            (["--config", str(other_ca), "--bind-password-file", str(password_file)], "ca_file: "),
            (["--config", str(config), "--bind-password-file", str(wrong_password)], "bind_password: "),
            (["--config", str(unreachable), "--bind-password-file", str(password_file)], "urls: cannot reach "),
            (["--config", str(config)], "bind_password "),
    ):
        code, out, err = _cli(capsys, "--store", store, "ldap", "sync", *arguments)
        assert code == 1, out
        assert err.startswith("opencapf: error: " + start) and err.count("\n") == 1, err
        assert "wrong-password" not in err + out
        assert _store_snapshot(store) == before
    # The password is never an argument.
    code, _out, err = _cli(capsys, "--store", store, "ldap", "sync", "--config", str(config), "--bind-password", "x")
    assert code == 2 and "unrecognized arguments: --bind-password x" in err


def define_template(store_path, name="soft"):
    with open_store(store_path, actor="test") as store:
        templates.define(store, name, {"certificate_operation": "install_upgrade", "authentication_mode": "null_string",
                                       "key_order": "ec"})


def _start_serve(store_path, log):
    serving = Serving(store_path, None, log.name).start()
    return serving.process, serving.port


def test_softphones_of_a_synced_directory_enrol_and_hold_lscs(ca_store, store_path, slapd_server, tmp_path):
    """Jabber softphones (CSF names) of a synced directory, each with the authentication string the
    template generated for it, enrol against a real serve process; all hold LSCs."""
    users = [f"agent{index:02d}" for index in range(12)]
    base = slapd_server.new_base({user: () for user in users})
    templates.define(ca_store, "jabber", {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
                                          "generate_authentication_string": True, "key_order": "ec"})
    result = directory.sync(ca_store, {"name": "corp", "urls": [slapd_server.ldaps_url], "ca_file": slapd_server.ca_file,
                                       "bind_dn": SYNC_DN, "search_base": base, "device_template": "jabber"},
                            bind_password=slapd_server.sync_password)
    strings = {item["device_name"]: item["authentication_string"] for item in result["authentication_strings"]}
    assert sorted(strings) == sorted(f"CSF{user.upper()}" for user in users)
    identities = [PhoneIdentity(PhoneSettings(name, model="Cisco Unified Client Services Framework",
                                              auth_mode="auth_string", auth_string=string),
                                key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
                  for name, string in sorted(strings.items())]
    capf_pem = authority.current(ca_store)["pem"]
    with open(tmp_path / "serve.log", "w", encoding="utf-8") as log:
        process, port = _start_serve(store_path, log)
        try:
            summary = asyncio.run(asyncio.wait_for(run_fleet(identities, Target(("127.0.0.1",), port, cadata=capf_pem,
                                                                                timeout=30), concurrency=12, retries=0), 120))
        finally:
            process.terminate()
            process.communicate(timeout=30)
    assert summary["failed_by_reason"] == {} and summary["ok"] == len(users)
    with ca_store.read() as tx:
        rows = tx.query("SELECT p.name, c.pem FROM certificates c JOIN phones p ON p.id = c.phone_id "
                        "WHERE c.status = 'installed' AND c.kind = 'lsc' ORDER BY p.name")
    assert [row["name"] for row in rows] == sorted(strings)
    assert openssl_verify_all(capf_pem, [row["pem"] for row in rows], tmp_path) == len(users)

"""Where the store lives: every file beside it is found from its real location (a store reached
through a symbolic link has one secret, one keys/ and one writer lock), and a store file or
directory that the group or others may write is refused by every entry point."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest

from _opencapf.ca import authority
from _opencapf.store import open_store
from support.serving import wait_gone
from support.tools import run_cli, snapshot

DEPLOYMENT = """\
opencapf: 1
phones:
  - name: SEP001122334455
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    authentication_string: "{string}"
"""


def _private_dir(path) -> str:
    os.mkdir(path, 0o700)
    return str(path)


def test_store_reached_through_a_symlink_keeps_one_secret_keys_dir_and_writer_lock(tmp_path):
    """Invariant: whichever path reaches the store, every file beside it is the one beside the real
    store, so an authentication string set through one path verifies through the other."""
    real_dir, link_dir = _private_dir(tmp_path / "real"), _private_dir(tmp_path / "elsewhere")
    real, link = os.path.join(real_dir, "capf.db"), os.path.join(link_dir, "capf.db")
    run_cli("--store", real, "init", check=True)
    os.symlink(real, link)
    deployment = tmp_path / "deploy.yml"
    deployment.write_text(DEPLOYMENT.format(string="1234567"))
    run_cli("--store", real, "apply", str(deployment), check=True)
    assert run_cli("--store", link, "plan", str(deployment), check=True).stdout.strip() == "no changes"
    deployment.write_text(DEPLOYMENT.format(string="7654321"))
    run_cli("--store", link, "apply", str(deployment), check=True)
    assert run_cli("--store", real, "plan", str(deployment), check=True).stdout.strip() == "no changes"

    # The service reached through the link verifies the string set through the real path.
    pid_file = tmp_path / "capf.pid"
    started = run_cli("--store", link, "--json", "serve", "--listen", "127.0.0.1", "--port", "0", "--processes", "1",
                      "--daemon", "--pid-file", str(pid_file), "--log-file", str(tmp_path / "capf.log"), check=True,
                      timeout=60)
    report = json.loads(started.stdout)
    try:
        assert os.path.exists(real + "-writer.lock")
        with open_store(real) as store:
            (tmp_path / "capf.pem").write_text(authority.current(store)["pem"])
        enrolled = run_cli("--json", "phone", "enrol", "SEP001122334455", "--dir", str(tmp_path / "phones"),
                           "--auth-mode", "auth_string", "--auth-string", "7654321", "--server", "127.0.0.1",
                           "--port", str(report["listening"][0][1]), "--capf-cert", str(tmp_path / "capf.pem"),
                           "--retries", "0", timeout=60)
        assert json.loads(enrolled.stdout)["outcome"] == "ok", enrolled.stdout + enrolled.stderr
    finally:
        os.kill(report["pid"], signal.SIGTERM)
    assert wait_gone(report["pid"])
    assert os.listdir(link_dir) == ["capf.db"], "nothing is created beside the link"
    assert {"secret.key", "keys"} <= set(os.listdir(real_dir))
    with open_store(link) as store:
        assert (store.location, store.state_dir, store.keys_dir) == (real, real_dir, os.path.join(real_dir, "keys"))


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720, 0o702], ids=lambda mode: f"{mode:04o}")
def test_init_refuses_a_store_directory_the_group_or_others_can_write(tmp_path, mode):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    result = run_cli("--store", str(directory / "capf.db"), "init")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"opencapf: error: store directory {directory} is writable by group or "
                                     f"others (mode {mode:04o}); make it 0700 or 0750")
    assert os.listdir(directory) == [], "nothing is created"


def _initialised(tmp_path) -> str:
    store = os.path.join(_private_dir(tmp_path / "state"), "capf.db")
    run_cli("--store", store, "init", check=True)
    return store


@pytest.mark.parametrize("what", ["store", "store directory"])
@pytest.mark.parametrize("command", ["init", "apply", "plan", "serve"])
def test_cli_refuses_a_store_the_group_or_others_can_write(tmp_path, what, command):
    store = _initialised(tmp_path)
    target = store if what == "store" else os.path.dirname(store)
    mode = 0o620 if what == "store" else 0o757
    os.chmod(target, mode)
    deployment = tmp_path / "deploy.yml"
    deployment.write_text(DEPLOYMENT.format(string="1234567"))
    before = snapshot(os.path.dirname(store))
    arguments = {"init": ["init"], "apply": ["apply", str(deployment)], "plan": ["plan", str(deployment)],
                 "serve": ["serve", "--listen", "127.0.0.1", "--port", "0", "--processes", "1"]}[command]
    result = run_cli("--store", store, *arguments, timeout=30)
    fix = "0600 or 0640" if what == "store" else "0700 or 0750"
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip() == f"opencapf: error: {what} {target} is writable by group or others (mode {mode:04o}); make it {fix}"
    assert snapshot(os.path.dirname(store)) == before


def test_state_directory_the_group_or_others_can_write_is_refused(tmp_path):
    store = _initialised(tmp_path)
    state = tmp_path / "other-state"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    result = run_cli("--store", store, "ca", "show", env=dict(os.environ, OPENCAPF_STATE_DIR=str(state)))
    assert result.returncode == 1
    assert f"state directory {state} is writable by group or others (mode 0777)" in result.stderr


def test_private_store_locations_are_accepted(tmp_path):
    """0700 and 0750 directories with a 0600 or 0640 store are fine; the store made by init is 0600 in 0700."""
    store = _initialised(tmp_path)
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(store)).st_mode) == 0o700
    os.chmod(os.path.dirname(store), 0o750)
    os.chmod(store, 0o640)
    assert run_cli("--store", store, "init").returncode == 0


def test_state_dir_option_keeps_the_key_files_there_and_is_validated(tmp_path, postgres_dsn):
    """``--state-dir`` (any command, the service's workers too): the secret.key of a PostgreSQL store, under
    which init seals the CAPF key, goes there; one the group or others may write, or a file, is a usage error
    before anything opens."""
    state = tmp_path / "state"
    result = run_cli("--store", postgres_dsn, "--state-dir", str(state), "init",
                     env={key: value for key, value in os.environ.items() if key != "OPENCAPF_STATE_DIR"})
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(state / "secret.key").st_mode) == 0o600  # what the CAPF key init made is sealed with
    state.chmod(0o777)
    refused = run_cli("--store", postgres_dsn, "--state-dir", str(state), "ca", "show")
    assert refused.returncode == 2
    assert f"argument --state-dir: state directory {state} is writable by group or others (mode 0777)" \
        in refused.stderr
    state.chmod(0o700)
    (tmp_path / "file").write_text("")
    refused = run_cli("--store", postgres_dsn, "--state-dir", str(tmp_path / "file"), "ca", "show")
    assert refused.returncode == 2 and "argument --state-dir: must be a directory" in refused.stderr

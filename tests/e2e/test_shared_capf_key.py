"""Two hosts on one store: the CAPF key travels sealed in the store, never as a copied key file. A
certificate regenerated through one host is served by the running service of the other at its next
connection; a host without the store's secret.key gets a one-line error."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat

from support.phones import phone, run_enrol
from support.protocol import RunningServer, add_phone, certificate_rows, openssl_verify, phone_row
from support.tools import run_cli
from _opencapf.dependencies import ec, serialization
from _opencapf.store import opened


def _state_dir(path, secret_from=None) -> str:
    os.makedirs(path, mode=0o700)
    if secret_from is not None:
        shutil.copy2(os.path.join(secret_from, "secret.key"), os.path.join(path, "secret.key"))
    return str(path)


def _cli_on(state_dir: str) -> dict:
    """The environment of the CLI on the host whose state directory is ``state_dir``."""
    return dict(os.environ, OPENCAPF_STATE_DIR=state_dir)


def _forget_key_files(state_dir: str) -> None:
    for path in glob.glob(os.path.join(state_dir, "keys", "*.key")):
        os.unlink(path)


def _enrol(first_dir, store_path, server, tmp_path, name, capf_pem):
    with opened(store_path, state_dir=first_dir, actor="test") as first:
        add_phone(first, name, operation="install_upgrade", key_order="ec")
    result = run_enrol(phone(tmp_path, name, auth_mode="null_string"), server, target_options={"cadata": capf_pem})
    assert result.outcome == "ok"
    with opened(store_path, state_dir=first_dir, actor="test") as first:
        (issued,) = certificate_rows(first, name)
    assert openssl_verify(capf_pem, issued["pem"], tmp_path).returncode == 0


def test_a_regenerated_capf_certificate_is_served_by_another_host_without_a_restart(tmp_path, monkeypatch):
    first_dir = _state_dir(tmp_path / "first")
    store_path = os.path.join(first_dir, "capf.db")
    run_cli("--store", store_path, "init", env=_cli_on(first_dir), check=True)
    with opened(store_path, state_dir=first_dir, actor="test") as first:
        first.secret()  # made by init already: the one file every host must share
    _forget_key_files(first_dir)
    second_dir = _state_dir(tmp_path / "second", secret_from=first_dir)
    monkeypatch.setenv("OPENCAPF_STATE_DIR", second_dir)
    server = RunningServer(store_path, step_timeout=5.0, handshake_timeout=5.0)
    try:
        _enrol(first_dir, store_path, server, tmp_path, "SEP00AA00BB0001", server.capf_pem)
        run_cli("--store", store_path, "ca", "regenerate", "--key-type", "ec256", env=_cli_on(first_dir), check=True)
        _forget_key_files(first_dir)
        shown = run_cli("--store", store_path, "--json", "ca", "show", "--pem", env=_cli_on(first_dir), check=True)
        regenerated = json.loads(shown.stdout)["pem"]
        assert regenerated != server.capf_pem
        _enrol(first_dir, store_path, server, tmp_path, "SEP00AA00BB0002", regenerated)
    finally:
        server.stop()
    cached = glob.glob(os.path.join(second_dir, "keys", "*.key"))
    assert cached and all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in cached)


def test_a_host_without_the_secret_key_of_the_store_gets_one_line(tmp_path):
    first_dir = _state_dir(tmp_path / "first")
    store_path = os.path.join(first_dir, "capf.db")
    run_cli("--store", store_path, "init", env=_cli_on(first_dir), check=True)
    public_key = tmp_path / "phone.pub"
    public_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    stranger_dir = _state_dir(tmp_path / "stranger")  # no secret.key: a fresh one is made
    result = run_cli("--store", store_path, "issue", "SEP00AA00BB0003", str(public_key), env=_cli_on(stranger_dir))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot be decrypted with" in result.stderr
    assert "every host sharing a store needs the secret.key of the host that created it" in result.stderr
    with opened(store_path, state_dir=first_dir, actor="test") as first:
        assert phone_row(first, "SEP00AA00BB0003") is None  # nothing half-written

"""The CLI end to end: init, ca show/regenerate, issue, and one-line errors that change nothing."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from support.pki import key_pem, make_cert, pem
from support.tools import openssl, run_cli


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def initialised(tmp_path):
    store = str(tmp_path / "state" / "capf.db")
    run_cli("--store", store, "init", check=True)
    return store


@pytest.fixture(scope="module")
def phone_keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    paths = {}
    for name, options in {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                          "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                          "rsa512": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
                          "ed25519": ["-algorithm", "ED25519"]}.items():
        key = directory / f"{name}.key"
        openssl("genpkey", *options, "-out", str(key))
        openssl("pkey", "-in", str(key), "-pubout", "-out", str(directory / f"{name}.pub"))
        paths[name] = str(directory / f"{name}.pub")
    return paths


def test_init_is_idempotent_and_shows_the_capf_certificate(tmp_path):
    store = str(tmp_path / "capf.db")
    first = json.loads(run_cli("--store", store, "--json", "init", check=True).stdout)
    second = json.loads(run_cli("--store", store, "--json", "init", check=True).stdout)
    assert first["created"] and not second["created"]
    assert first["capf_certificate"]["fingerprint"] == second["capf_certificate"]["fingerprint"]
    shown = json.loads(run_cli("--store", store, "--json", "ca", "show", check=True).stdout)
    assert shown["common_name"].startswith("CAPF-") and "pem" not in shown


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_issue_prints_a_verifiable_lsc(initialised, phone_keys, tmp_path, kind):
    result = run_cli("--store", initialised, "issue", "SEP0011223344AA", phone_keys[kind], "--out",
                     str(tmp_path / "lsc.pem"), check=True)
    assert result.stdout.startswith("-----BEGIN CERTIFICATE-----")
    capf = json.loads(run_cli("--store", initialised, "--json", "ca", "show", "--pem", check=True).stdout)
    (tmp_path / "capf.pem").write_text(capf["pem"])
    verified = openssl("verify", "-CAfile", str(tmp_path / "capf.pem"), str(tmp_path / "lsc.pem"))
    assert verified.stdout.decode().strip().endswith(": OK")


def test_regenerate_keeps_old_certificate_in_history(initialised):
    before = json.loads(run_cli("--store", initialised, "--json", "ca", "show", check=True).stdout)
    run_cli("--store", initialised, "ca", "regenerate", "--key-type", "ec256", check=True)
    history = json.loads(run_cli("--store", initialised, "--json", "ca", "show", "--history", check=True).stdout)
    assert [h["active"] for h in history] == [True, False]
    assert history[1]["fingerprint"] == before["fingerprint"] and history[0]["key_type"] == "ec"


def assert_one_line_error(result, pattern):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 or lines[0].startswith("usage:"), result.stderr
    assert pattern in lines[-1], result.stderr


@pytest.mark.parametrize("args,pattern", [
    (["issue", "SEP0011223344AA", "{rsa512}"], "1024\u20134096 bits"),
    (["issue", "SEP0011223344AA", "{ed25519}"], "unsupported public key type"),
    (["issue", "SEP0011223344AA", "{rsa}", "--validity-days", "2000"], "argument --validity-days: must be 1\u20131825 days, got '2000'"),
    (["issue", "NOTAPHONE", "{rsa}"], "device_name must be SEP"),
    (["issue", "SEP0011223344AA", "{malformed}"], "is not a PEM or DER public key"),
    (["issue", "SEP0011223344AA", "{missing}"], "cannot read public key file"),
    (["ca", "regenerate", "--key-type", "rsa1024"], "invalid choice"),
])
def test_bad_input_is_one_line_and_changes_nothing(initialised, phone_keys, tmp_path, args, pattern):
    malformed = tmp_path / "malformed.pem"
    malformed.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    paths = dict(phone_keys, malformed=str(malformed), missing=str(tmp_path / "absent.pem"))
    before = digest(initialised)
    result = run_cli("--store", initialised, *[arg.format(**paths) for arg in args])
    assert_one_line_error(result, pattern)
    assert digest(initialised) == before


def test_corrupt_store_is_reported_and_left_alone(tmp_path, phone_keys):
    store = tmp_path / "capf.db"
    store.write_bytes(b"\x00garbage" * 512)
    result = run_cli("--store", str(store), "issue", "SEP0011223344AA", phone_keys["rsa"])
    assert_one_line_error(result, "not a usable SQLite database")
    assert store.read_bytes() == b"\x00garbage" * 512


def test_unreadable_store_is_reported(tmp_path, phone_keys):
    store = tmp_path / "dir.db"
    store.mkdir()
    assert_one_line_error(run_cli("--store", str(store), "init"), "is not a regular file")


def test_world_readable_secret_key_is_refused(initialised, phone_keys):
    # The CAPF key is sealed in the store under secret.key: that file is the key to protect.
    os.chmod(os.path.join(os.path.dirname(initialised), "secret.key"), 0o644)
    before = digest(initialised)
    result = run_cli("--store", initialised, "issue", "SEP0011223344AA", phone_keys["rsa"])
    assert_one_line_error(result, "readable or writable by group/others")
    assert digest(initialised) == before


def test_uploaded_key_file_must_be_private(initialised, tmp_path):
    certificate, key = make_cert("Uploaded root")
    (tmp_path / "capf.pem").write_text(pem(certificate))
    (tmp_path / "capf.key").write_bytes(key_pem(key))
    os.chmod(tmp_path / "capf.key", 0o644)
    result = run_cli("--store", initialised, "ca", "upload", "--certificate", str(tmp_path / "capf.pem"),
                     "--key", str(tmp_path / "capf.key"))
    assert_one_line_error(result, "chmod 600")
    os.chmod(tmp_path / "capf.key", 0o600)
    run_cli("--store", initialised, "ca", "upload", "--certificate", str(tmp_path / "capf.pem"),
            "--key", str(tmp_path / "capf.key"), check=True)

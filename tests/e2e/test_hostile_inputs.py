"""Hostile input through the command line and the engine: oversized certificates, CSV and YAML,
alias bombs, path traversal through names, symbolic links at output paths, file permissions.

Every refusal is one line naming the field or file and the limit, and leaves the store as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from support.pki import key_pem, make_cert, pem
from support.tools import ENGINE_PATH, run_cli
from _opencapf import csv_import
from _opencapf.errors import ValidationError
from _opencapf.vocabulary import (MAX_CERTIFICATES, MAX_CSV_CELL, MAX_CSV_ROWS, MAX_DOCUMENT_DEPTH,
                                  MAX_DOCUMENT_BYTES, MAX_DOCUMENT_NODES, MAX_INPUT_BYTES)

MIB = 1024 * 1024


@pytest.fixture
def initialised(ca_store):
    """The path of a store with a CAPF certificate (made in-process: quicker than ``init``)."""
    return ca_store.location


def contents(store):
    """Every row of every table (the store's observable state), after a WAL checkpoint."""
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: db.execute(f"SELECT * FROM {table}").fetchall() for table in tables}


def one_line_error(result, *patterns):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]


# -- oversized certificates ------------------------------------------------------------------------

def test_ten_megabyte_certificate_file_is_refused(initialised, tmp_path):
    certificate, key = make_cert("Big upload")
    big = tmp_path / "big.pem"
    block = pem(certificate).encode()
    big.write_bytes(block * (10 * MIB // len(block) + 1))
    key_file = tmp_path / "capf.key"
    key_file.write_bytes(key_pem(key))
    os.chmod(key_file, 0o600)
    before = contents(initialised)
    result = run_cli("--store", initialised, "ca", "upload", "--certificate", str(big), "--key", str(key_file))
    one_line_error(result, str(big), f"limit of {MAX_INPUT_BYTES} bytes")
    assert contents(initialised) == before


def test_ten_megabyte_key_file_is_refused(initialised, tmp_path):
    certificate, _key = make_cert("Upload with a huge key")
    (tmp_path / "capf.pem").write_text(pem(certificate))
    key_file = tmp_path / "capf.key"
    with open(key_file, "wb") as handle:
        handle.truncate(10 * MIB)
    os.chmod(key_file, 0o600)
    before = contents(initialised)
    result = run_cli("--store", initialised, "ca", "upload", "--certificate", str(tmp_path / "capf.pem"),
                     "--key", str(key_file))
    one_line_error(result, str(key_file), f"limit of {MAX_INPUT_BYTES} bytes")
    assert contents(initialised) == before


def test_chain_of_too_many_certificates_is_refused(store):
    from _opencapf import trust
    from _opencapf.errors import CertificateError
    certificate, _key = make_cert("One of many")
    with pytest.raises(CertificateError, match=f"at most {MAX_CERTIFICATES}"):
        trust.converge(store, trust_store="capf-trust", content=pem(certificate) * (MAX_CERTIFICATES + 1))
    with pytest.raises(CertificateError, match=f"content is {11 * MIB} bytes, larger than the limit"):
        trust.converge(store, trust_store="capf-trust", content="x" * (11 * MIB))
    with store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM trust_certificates") == 0


# -- oversized and malformed CSV -------------------------------------------------------------------

def test_csv_row_limit(tmp_path):
    lines = ["device_name"] + ["SEP%012X" % number for number in range(MAX_CSV_ROWS + 1)]
    with pytest.raises(ValidationError, match=f"more than {MAX_CSV_ROWS} rows"):
        csv_import.parse("\n".join(lines) + "\n", "csv_file")


def test_csv_byte_limit(tmp_path):
    path = tmp_path / "huge.csv"
    with open(path, "wb") as handle:
        handle.write(b"device_name\n")
        handle.truncate(csv_import.MAX_BYTES + 1)
    with pytest.raises(ValidationError, match="^csv_file: CSV file .* larger than the limit of 33554432 bytes"):
        csv_import.read(str(path))


@pytest.mark.parametrize("body,message", [
    ("SEP001122334455," + "d" * (MAX_CSV_CELL + 1) + "\n", f"description is longer than the limit of {MAX_CSV_CELL}"),
    ("SEP001122334455,\"" + "d" * 200000 + "\"\n", "is not valid CSV near line"),
    ("SEP001122334455,a\x00b\n", "description must not contain control characters"),
    ("SEP001122334455,\"unterminated\n", "is not valid CSV near line|has 1 bad row"),
])
def test_csv_hostile_cells(body, message):
    with pytest.raises(ValidationError, match=message):
        csv_import.parse("device_name,description\n" + body, "csv_file")


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/passwd", "SEP001122334455/../x", "..", "SEP0011\x00"])
def test_csv_device_names_cannot_be_paths(name):
    with pytest.raises(ValidationError, match="device_name"):
        csv_import.parse(f"device_name\n\"{name}\"\n", "csv_file")


# -- hostile YAML ------------------------------------------------------------------------------

def _laughs(levels: int = 9) -> str:
    text = 'lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in range(1, levels + 1):
        text += f"lol{level}: &lol{level} [" + ",".join([f"*lol{level - 1}"] * 10) + "]\n"
    return text


@pytest.mark.parametrize("text,message", [
    ("opencapf: 1\nphones: []\n" + _laughs(), f"more than {MAX_DOCUMENT_NODES} YAML nodes"),
    ("opencapf: 1\nphones: &loop [*loop]\n", "refers to itself through an alias"),
    ("opencapf: 1\nphones: " + "[" * 200 + "]" * 200 + "\n", f"deeper than {MAX_DOCUMENT_DEPTH} levels"),
    ("opencapf: 1\nphones: !!python/object/apply:os.system [\"touch pwned\"]\n", "is not valid YAML"),
])
def test_hostile_deployment_file_is_refused_before_the_store(initialised, tmp_path, text, message):
    deployment = tmp_path / "deploy.yml"
    deployment.write_text(text)
    before = contents(initialised)
    result = run_cli("--store", initialised, "apply", str(deployment), timeout=60)
    one_line_error(result, str(deployment), message)
    assert contents(initialised) == before
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_oversized_deployment_file_is_refused(initialised, tmp_path):
    deployment = tmp_path / "deploy.yml"
    deployment.write_text("opencapf: 1\n# " + "x" * (MAX_DOCUMENT_BYTES + MIB) + "\n")
    result = run_cli("--store", initialised, "apply", str(deployment))
    one_line_error(result, str(deployment), f"limit of {MAX_DOCUMENT_BYTES} bytes")


def test_aliases_within_the_limits_still_work():
    from _opencapf.declarative import document
    loaded = document.parse("opencapf: 1\nphones:\n"
                            "  - &lobby {name: SEP001122334455, certificate_operation: install_upgrade}\n"
                            "  - {<<: *lobby, name: SEP001122334456}\n", "deploy.yml")
    assert [phone["name"] for phone in loaded.data["phones"]] == ["SEP001122334455", "SEP001122334456"]


# -- names that would be paths -------------------------------------------------------------------

def test_uploaded_capf_certificate_cn_cannot_place_its_key_outside_keys(initialised, tmp_path):
    certificate, key = make_cert("../../../../escaped")
    (tmp_path / "capf.pem").write_text(pem(certificate))
    (tmp_path / "capf.key").write_bytes(key_pem(key))
    os.chmod(tmp_path / "capf.key", 0o600)
    run_cli("--store", initialised, "ca", "upload", "--certificate", str(tmp_path / "capf.pem"),
            "--key", str(tmp_path / "capf.key"), check=True)
    from _opencapf.ca import authority
    from _opencapf.store import opened
    with opened(initialised) as store:  # the key is sealed in the store; its file is the TLS listener's cache
        authority.key_file(store, authority.signer(store))
    keys_dir = os.path.join(os.path.dirname(initialised), "keys")
    found = [os.path.join(root, name) for root, _dirs, names in os.walk(os.path.dirname(str(tmp_path)))
             for name in names if "escaped" in name]
    assert len(found) == 1 and os.path.dirname(found[0]) == keys_dir, found
    assert stat.S_IMODE(os.stat(found[0]).st_mode) == 0o600


def test_simulator_keeps_a_hostile_device_name_inside_its_directory(tmp_path):
    phones = tmp_path / "phones"
    run_cli("phone", "enrol", "../../outside", "--dir", str(phones), "--server", "127.0.0.1", "--port", "9",
            "--retries", "0", "--timeout", "1")
    assert not (tmp_path.parent / "OUTSIDE").exists() and not (tmp_path / "OUTSIDE").exists()
    assert [entry.name for entry in phones.iterdir()] == ["_.._OUTSIDE"]


def test_output_file_symlink_is_replaced_not_followed(initialised, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "lsc.pem"
    os.symlink(victim, out)
    public = tmp_path / "phone.pub"
    from _opencapf.dependencies import ec, serialization
    public.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    run_cli("--store", initialised, "issue", "SEP00112233445A", str(public), "--out", str(out), check=True)
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink() and out.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_key_write_over_a_planted_symlink_stays_private(tmp_path):
    from _opencapf.files import write_private_file
    target = tmp_path / "world-readable.txt"
    target.write_text("public\n")
    os.chmod(target, 0o644)
    link = tmp_path / "keys" / "capf.key"
    link.parent.mkdir(mode=0o700)
    os.symlink(target, link)
    write_private_file(str(link), b"secret key\n")
    assert target.read_text() == "public\n"
    assert not link.is_symlink() and stat.S_IMODE(os.stat(link).st_mode) == 0o600


# -- permissions -----------------------------------------------------------------------------------

def test_state_files_are_private_even_with_umask_zero(tmp_path):
    """init, the keyed-hash secret, the CAPF key's cache file and a write (WAL and SHM files exist
    while the store is open), all under umask 000: every file 0600, every directory 0700."""
    store = tmp_path / "state" / "capf.db"
    code = """if True:
        import json, os, stat, sys
        os.umask(0)
        from _opencapf.cli.main import main
        assert main(["--store", sys.argv[1], "init"]) == 0
        from _opencapf.store import open_store
        from _opencapf.ca import authority
        with open_store(sys.argv[1]) as store:
            store.secret()
            authority.key_file(store, authority.signer(store))
            with store.transaction() as tx:
                tx.execute("UPDATE service_parameters SET updated_at = updated_at")
            state = os.path.dirname(sys.argv[1])
            modes = {}
            for root, directories, files in os.walk(state):
                for name in directories + files:
                    path = os.path.join(root, name)
                    modes[os.path.relpath(path, state)] = stat.S_IMODE(os.stat(path).st_mode)
            modes["."] = stat.S_IMODE(os.stat(state).st_mode)
        print(json.dumps(modes))
    """
    child = subprocess.run([sys.executable, "-c", code, str(store)], env=dict(os.environ, PYTHONPATH=ENGINE_PATH),
                           capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    modes = json.loads(child.stdout.strip().splitlines()[-1])
    assert {"capf.db", "capf.db-wal", "capf.db-shm", "secret.key", "keys", "."} <= set(modes), modes
    assert [name for name, mode in modes.items() if name.startswith("keys/") and name.endswith(".key")], modes
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o700 if name in (".", "keys") else 0o600)}
    assert not wrong, wrong


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620])
def test_cli_refuses_key_files_others_or_the_group_can_read_or_write(initialised, tmp_path, mode):
    certificate, key = make_cert("Uploaded CAPF")
    (tmp_path / "capf.pem").write_text(pem(certificate))
    key_file = tmp_path / "capf.key"
    key_file.write_bytes(key_pem(key))
    os.chmod(key_file, mode)
    before = contents(initialised)
    result = run_cli("--store", initialised, "ca", "upload", "--certificate", str(tmp_path / "capf.pem"),
                     "--key", str(key_file))
    one_line_error(result, str(key_file), f"mode {mode:04o}", f"chmod 600 {key_file}")
    assert contents(initialised) == before

"""Progress of long commands: drawn on a terminal (a real pty), silent when standard error is a
pipe or the results are JSON, and the results the same either way."""

from __future__ import annotations

import json

from support.protocol import add_phone
from support.terminal import run_cli_on_terminal
from support.tools import run_cli

PHONES = 1500


def _declarative_file(path, phones: int) -> str:
    lines = ["opencapf: 1", "phones:"]
    for index in range(phones):
        lines += [f"  - name: SEP00AB{index:08X}", "    certificate_operation: install_upgrade",
                  "    authentication_mode: null_string"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _is_quiet(text: str) -> bool:
    return "\r" not in text and "[#" not in text and "..." not in text


def test_apply_of_a_large_file_shows_progress_only_on_a_terminal(tmp_path):
    deploy = _declarative_file(tmp_path / "deploy.yml", PHONES)
    status, out, terminal = run_cli_on_terminal("--store", str(tmp_path / "a" / "capf.db"), "apply", deploy)
    assert status == 0, terminal
    assert f"reading {deploy} ..." in terminal and "\rphones [" in terminal.replace("\x1b[K", "")
    assert f"[{'#' * 30}] {PHONES}/{PHONES}" in terminal and terminal.endswith("\r\n")
    piped = run_cli("--store", str(tmp_path / "b" / "capf.db"), "apply", deploy)
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout == out
    assert f"{PHONES} to create" in out
    status, out, terminal = run_cli_on_terminal("--store", str(tmp_path / "c" / "capf.db"), "--json", "apply", deploy)
    assert status == 0 and terminal == "" and json.loads(out)["changed"] is True


def test_csr_import_of_many_files_shows_progress_only_on_a_terminal(tmp_path):
    store = str(tmp_path / "state" / "capf.db")
    run_cli("--store", store, "init", check=True)
    files = []
    for index in range(40):
        files.append(tmp_path / f"signed-{index}.cer")
        files[-1].write_bytes(b"not a certificate %d\n" % index)
    status, out, terminal = run_cli_on_terminal("--store", store, "csr", "import", *map(str, files))
    assert status == 1 and out.count("refused") == 40
    assert f"[{'#' * 30}] 40/40" in terminal and "files [" in terminal
    piped = run_cli("--store", store, "csr", "import", *map(str, files))
    assert piped.returncode == 1 and _is_quiet(piped.stderr) and piped.stdout == out


def test_phone_fleet_shows_progress_only_on_a_terminal(capf_server, ca_store, tmp_path):
    for index in range(3):
        add_phone(ca_store, f"SEP0000000002{index:02X}", operation="install_upgrade", key_order="ec")
    capf_pem = tmp_path / "capf.pem"
    capf_pem.write_text(capf_server.capf_pem)
    fleet = ("phone", "fleet", "--count", "3", "--first", "SEP000000000200", "--server", "127.0.0.1",
             "--port", str(capf_server.port), "--capf-cert", str(capf_pem), "--retries", "0")
    piped = run_cli(*fleet)
    assert piped.returncode == 0 and piped.stdout.startswith("phones 3: ok 3, failed 0"), piped
    assert _is_quiet(piped.stderr), piped.stderr
    status, out, terminal = run_cli_on_terminal(*fleet)
    assert status == 0 and out.startswith("phones 3: ok 3, failed 0"), (out, terminal)
    assert f"phones [{'#' * 30}] 3/3" in terminal and f"identities [{'#' * 30}] 3/3" in terminal

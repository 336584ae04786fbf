"""The CLI verbs of the protocol service: serve --daemon, phone enrol, mic-ca create, session limit.

SQLite only: nothing here depends on the store's backend (a daemon on a PostgreSQL store is in
test_cluster.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl

from support.protocol import RunningServer, add_phone, certificate_rows, openssl_verify
from support.serving import wait_gone
from support.tools import run_cli
from support.phones import phone, run_enrol
from _opencapf.ca import authority
from _opencapf.store import service as service_records


def test_daemon_mic_ca_and_phone_enrol(ca_store, store_cli, tmp_path):
    store = store_cli
    created = json.loads(run_cli(*store, "--json", "mic-ca", "create", str(tmp_path / "mic"), "--trust",
                                 check=True).stdout)
    assert created["trusted"] is True and created["is_ca"] is True
    add_phone(ca_store, "SEP0123456789AB", operation="install_upgrade", auth_mode="existing_cert_mic", key_order="rsa")
    pid_file, log_file = tmp_path / "capf.pid", tmp_path / "capf.log"
    started = run_cli(*store, "--json", "serve", "--listen", "127.0.0.1", "--port", "0", "--processes", "1", "--daemon",
                      "--pid-file", str(pid_file), "--log-file", str(log_file), check=True, timeout=60)
    report = json.loads(started.stdout)
    pid, port = report["pid"], report["listening"][0][1]
    try:
        assert int(pid_file.read_text()) == pid
        capf_pem = tmp_path / "capf.pem"
        capf_pem.write_text(authority.current(ca_store)["pem"])
        common = ["--server", "127.0.0.1", "--port", str(port), "--capf-cert", str(capf_pem), "--retries", "0"]
        enrolled = run_cli("--json", "phone", "enrol", "SEP0123456789AB", "--dir", str(tmp_path / "phones"),
                           "--mic-ca", str(tmp_path / "mic"), "--auth-mode", "existing_cert_mic", *common,
                           check=True, timeout=60)
        result = json.loads(enrolled.stdout)
        assert (result["outcome"], result["key"]) == ("ok", "rsa2048")
        assert os.path.exists(tmp_path / "phones" / "SEP0123456789AB" / "lsc.pem")
        (lsc,) = certificate_rows(ca_store, "SEP0123456789AB")
        assert lsc["status"] == "installed"
        assert openssl_verify(authority.current(ca_store)["pem"], lsc["pem"], tmp_path).returncode == 0
        unknown = run_cli("phone", "enrol", "SEP0000000000FF", "--dir", str(tmp_path / "phones"), *common, timeout=60)
        assert unknown.returncode == 1 and "unknown_device" in unknown.stdout
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid), "the daemon did not stop on SIGTERM"
    log = log_file.read_text()
    assert "listening on 127.0.0.1" in log and "CAPF service stopped" in log and "Traceback" not in log
    assert not pid_file.exists()


def test_daemon_reports_why_it_cannot_start(store_path, tmp_path):
    run_cli("--store", store_path, "init", check=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        failed = run_cli("--store", store_path, "serve", "--listen", "127.0.0.1", "--port", str(port), "--processes", "1",
                         "--daemon", "--log-file", str(tmp_path / "log"), timeout=60)
    assert failed.returncode == 1 and "address already in use" in failed.stderr.lower()


def test_session_limit_queues_then_refuses_cleanly(ca_store, tmp_path):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"max_sessions": 1})
    server = RunningServer(ca_store, ["127.0.0.1"], step_timeout=5.0, queue_timeout=0.5)
    try:
        add_phone(ca_store, "SEP00000000AAA1", operation="install_upgrade", key_order="ec")
        # A TLS client that has its AUTH_REQUEST holds the only session slot (a connection that has
        # not finished its TLS handshake holds none).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        holder = context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        assert holder.recv(4096)[:1] == b"\x55"
        try:
            queued = phone(tmp_path, "SEP00000000AAA1")
            result = run_enrol(queued, server)
            assert result.outcome == "communication_failure"
        finally:
            holder.close()
        result = run_enrol(queued, server, retries=3, retry_interval=0.2)
        assert result.outcome == "ok"
        with ca_store.read() as tx:
            outcomes = [row["outcome"] for row in tx.query("SELECT outcome FROM sessions ORDER BY id")]
    finally:
        server.stop()
    assert "refused" in outcomes and outcomes[-1] == "succeeded"


def test_fleet_cli_summary(capf_server, ca_store, tmp_path):
    for index in range(3):
        add_phone(ca_store, f"SEP0000000001{index:02X}", operation="install_upgrade", key_order="ec")
    capf_pem = tmp_path / "capf.pem"
    capf_pem.write_text(capf_server.capf_pem)
    done = run_cli("--json", "phone", "fleet", "--count", "4", "--first", "SEP000000000100", "--server", "127.0.0.1",
                   "--port", str(capf_server.port), "--capf-cert", str(capf_pem), "--retries", "0", timeout=120)
    summary = json.loads(done.stdout)
    assert done.returncode == 1  # the fourth phone is not in the store
    assert (summary["ok"], summary["failed"]) == (3, 1)
    assert summary["failed_by_reason"] == {"unknown_device": 1}
    assert summary["rate_per_second"] > 0

"""Revocation inside a real ``opencapf serve`` with simulated phones: re-issuing an LSC revokes the one
before (superseded), a delete operation revokes the deleted one (cessation of operation), LSCs name the
configured CRL distribution point (the location of their CAPF certificate's own CRL), and the service
publishes the CRL listing both to the crl_path file (0644) and over HTTP (GET /capf.crl and the
location the LSCs name, application/pkix-crl), the very same bytes."""

from __future__ import annotations

import os
import signal
import socket
import stat
import time
import types
import urllib.error
import urllib.request

from support.phones import phone, run_enrol
from support.protocol import add_phone, certificate_rows
from support.serving import Serving
from support.store_phones import change_phone
from _opencapf.ca import authority
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import x509
from _opencapf.store import service as service_records

NAME = "SEP00CC00DD0001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(store_path, log):
    serving = Serving(store_path, None, log.name).start("--enrolment-interval", "0")
    return serving.process, serving.port


def _arm(store, operation):
    with store.transaction() as tx:
        change_phone(tx, NAME, operation=operation, reissue=True)


def _crl_entries(path):
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as handle:
        return {entry["serial"]: entry["reason"] for entry in crl_module.describe(handle.read())["entries"]}


def test_the_service_revokes_and_publishes_the_crl(ca_store, store_path, tmp_path):
    crl_path = str(tmp_path / "www" / "capf.crl")
    os.mkdir(os.path.dirname(crl_path))
    http_port = _free_port()
    url = f"http://127.0.0.1:{http_port}/capf.crl"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1, "crl_path": crl_path, "crl_url": url,
                                           "crl_http_address": "127.0.0.1", "crl_http_port": http_port})
    add_phone(ca_store, NAME, operation="install_upgrade", auth_mode="null_string", key_order="ec")
    identity = phone(tmp_path, NAME, auth_mode="null_string")
    with open(tmp_path / "serve.log", "w", encoding="utf-8") as log:
        process, port = _serve(store_path, log)
        try:
            server = types.SimpleNamespace(port=port, capf_pem=authority.current(ca_store)["pem"])
            assert run_enrol(identity, server).outcome == "ok"
            first = certificate_rows(ca_store, NAME)[0]
            points = x509.load_pem_x509_certificate(first["pem"].encode()).extensions.get_extension_for_class(
                x509.CRLDistributionPoints)
            issuer_url = crl_module.issuer_location(url, authority.current(ca_store)["fingerprint"])
            assert points.value[0].full_name[0].value == issuer_url  # the CRL of its own CAPF certificate
            _arm(ca_store, "install_upgrade")
            assert run_enrol(identity, server).outcome == "ok"
            second = [row for row in certificate_rows(ca_store, NAME) if row["id"] != first["id"]][0]
            _arm(ca_store, "delete")
            assert run_enrol(identity, server).outcome == "ok"

            wanted = {first["serial"]: "superseded", second["serial"]: "cessation_of_operation"}
            deadline = time.monotonic() + 20
            while _crl_entries(crl_path) != wanted and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _crl_entries(crl_path) == wanted
            assert stat.S_IMODE(os.stat(crl_path).st_mode) == 0o644
            with urllib.request.urlopen(url, timeout=10) as response:
                served = response.read()
                assert response.headers["Content-Type"] == "application/pkix-crl"
            with open(crl_path, "rb") as handle:
                assert served == handle.read()
            with urllib.request.urlopen(issuer_url, timeout=10) as response:
                assert response.read() == served
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/other", timeout=10)
                raise AssertionError("a path other than /capf.crl was answered")
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
            for request, status in ((b"garbage\r\n\r\n", b"400"), (b"POST /capf.crl HTTP/1.1\r\n\r\n", b"405"),
                                    (b"HEAD /capf.crl HTTP/1.0\r\n\r\n", b"200")):
                with socket.create_connection(("127.0.0.1", http_port), timeout=10) as sock:
                    sock.sendall(request)
                    answer = b""
                    while chunk := sock.recv(4096):
                        answer += chunk
                assert answer.split(b" ")[1] == status and answer.endswith(b"\r\n\r\n"), answer  # HEAD: no body
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert process.returncode == 0

"""The unattended lifecycle over real parts: the Prometheus endpoint of ``serve --processes 2`` scraped
over HTTP while a simulated fleet enrols, and automatic renewal re-enrolling a simulated fleet."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from support.serving import Serving
from support.store_phones import create_phone
from support.tools import run_cli
from _opencapf import renewal
from _opencapf.ca import authority
from _opencapf.dependencies import ec
from _opencapf.simulator.client import Target
from _opencapf.simulator.fleet import run_fleet
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import monitor as monitor_records
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, parse_utc, utc_now

STOPPED = re.compile(r"CAPF worker (\d) \(pid (\d+)\) stopped after serving (\d+) sessions")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(store_path, log, *extra):
    serving = Serving(store_path, None, log.name).start("--step-timeout", "60", *extra)
    return serving.process, serving.port


def _stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _scrape(address) -> dict:
    """``{(sample name, sorted labels): value}`` of one scrape, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _identities(names):
    return [PhoneIdentity(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
            for name in names]


def _fleet(identities, port, capf_pem, barrier=True):
    async def run():
        return await asyncio.wait_for(run_fleet(identities, Target(("127.0.0.1",), port, cadata=capf_pem, timeout=60),
                                                concurrency=len(identities), retries=0,
                                                barrier=asyncio.Barrier(len(identities)) if barrier else None), 170)
    return asyncio.run(run())


def _failed_handshake(port):
    """A client that speaks TLS and gives up in its handshake (it trusts no certificate)."""
    context = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            context.wrap_socket(sock, server_hostname="capf.invalid")
        except ssl.SSLError:
            pass


def test_metrics_of_two_processes_equal_what_the_store_recorded(ca_store, store_path, tmp_path):
    count = 24
    names = [f"SEP{index:012X}" for index in range(0xC1, 0xC1 + count)]
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 1})
        for name in names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
    capf_pem = authority.current(ca_store)["pem"]
    address = f"127.0.0.1:{_free_port()}"
    stale = os.path.join(store_path[:-len("capf.db")], "metrics", address.replace(":", "_"))
    os.makedirs(stale, mode=0o700)
    with open(os.path.join(stale, "counter_1.db"), "wb") as handle:  # counts of a previous run: emptied at start
        handle.write(b"\0" * 8)
    log_path = tmp_path / "serve.log"
    scrapes = []
    with open(log_path, "w", encoding="utf-8") as log:
        process, port = _start(store_path, log, "--processes", "2", "--metrics-address", address)
        try:
            assert not os.path.exists(os.path.join(stale, "counter_1.db"))
            before = _scrape(address)
            stop = threading.Event()

            def scrape_meanwhile():
                while not stop.is_set():
                    scrapes.append(_scrape(address))
                    stop.wait(0.2)

            scraper = threading.Thread(target=scrape_meanwhile)
            scraper.start()
            try:
                summary = _fleet(_identities(names), port, capf_pem)
                for _attempt in range(3):
                    _failed_handshake(port)
                locked = PhoneIdentity(PhoneSettings("SEP00000000F0D1", auth_mode="auth_string", auth_string="1234"))
                secret = ca_store.secret()
                with ca_store.transaction() as tx:  # the phone gives another string than the one set
                    create_phone(tx, "SEP00000000F0D1", operation="install_upgrade", auth_mode="auth_string",
                                 secret=secret, auth_string="98765")
                _fleet([locked], port, capf_pem, barrier=False)
            finally:
                stop.set()
                scraper.join()
            deadline = time.monotonic() + 10
            after = _scrape(address)
            while time.monotonic() < deadline and after.get(("opencapf_tls_handshake_failures_total", ())) != 3:
                time.sleep(0.2)  # a failed handshake is recorded once the server has seen it fail
                after = _scrape(address)
        finally:
            _stop(process)
    errors = log_path.read_text()
    assert summary["ok"] == count, summary
    assert process.returncode == 0 and "Traceback" not in errors, errors
    served = [int(n) for _index, _pid, n in STOPPED.findall(errors)]
    assert len(served) == 2 and all(n > 0 for n in served), errors  # both workers served: the sums span them

    with ca_store.read() as tx:
        sessions = tx.query("SELECT outcome, operation, COUNT(*) AS n FROM sessions GROUP BY outcome, operation")
        lscs = tx.query("SELECT status, COUNT(*) AS n FROM certificates WHERE kind = 'lsc' GROUP BY status")
        monitored = monitor_records.last_success(tx)
    capf = authority.current(ca_store)
    recorded = {(row["outcome"], row["operation"]): row["n"] for row in sessions}
    exposed = {(dict(labels)["outcome"], dict(labels)["operation"]): value for (name, labels), value in after.items()
               if name == "opencapf_sessions_total"}
    assert exposed == recorded and recorded[("succeeded", "install_upgrade")] == count, (exposed, recorded)
    assert after[("opencapf_tls_handshake_failures_total", ())] == recorded[("tls_failed", "")] == 3
    assert {dict(labels)["status"]: value for (name, labels), value in after.items()
            if name == "opencapf_lscs"} == {row["status"]: row["n"] for row in lscs} == {"installed": count}
    assert after[("opencapf_enrolment_duration_seconds_count", ())] == count
    assert after[("opencapf_lockouts_total", ())] == 1
    assert after[("opencapf_phones_locked", ())] == 1
    assert after[("opencapf_sessions_in_flight", ())] == 0
    assert after[("opencapf_lscs_expiring_30d", ())] == 0
    days_left = (parse_utc(capf["not_after"], "not_after") - utc_now()).total_seconds() / 86400
    assert abs(after[("opencapf_capf_certificate_days_left", ())] - days_left) < 0.1
    # The service's first tick ran the certificate monitor (nothing expires soon: no mail).
    assert monitored is not None and monitored["result"] in ("nothing_due", "not_configured"), monitored
    assert after[("opencapf_monitor_last_success_timestamp_seconds", ())] == \
        parse_utc(monitored["finished_at"], "finished_at").timestamp()
    # Before the fleet nothing was counted; meanwhile the counts only grew.
    assert before.get(("opencapf_sessions_total", (("operation", "install_upgrade"), ("outcome", "succeeded")))) \
        is None
    assert scrapes
    key = ("opencapf_sessions_total", (("operation", "install_upgrade"), ("outcome", "succeeded")))
    seen = [scrape.get(key, 0) for scrape in scrapes] + [after[key]]
    assert seen == sorted(seen)


def test_metrics_address_is_checked_and_a_taken_port_fails_the_start(ca_store, store_path):
    done = run_cli("--store", store_path, "serve", "--metrics-address", "localhost:9", timeout=60)
    assert done.returncode == 2 and "--metrics-address: must be IP-ADDRESS:PORT" in done.stderr, done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_cli("--store", store_path, "serve", "--listen", "127.0.0.1", "--port", "0", "--processes", "2",
                       "--metrics-address", address, timeout=60)
    assert done.returncode == 1 and f"metrics_address {address}: cannot listen" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _renew(store_path):
    done = run_cli("--json", "--store", store_path, "renew", "run", check=True)
    return json.loads(done.stdout)


def _lscs(store, name):
    with store.read() as tx:
        phone = phone_records.get(tx, name)
        return tx.query("SELECT status, not_after FROM certificates WHERE phone_id = ? AND kind = 'lsc' ORDER BY id",
                        (phone["id"],))


def test_automatic_renewal_reenrols_a_fleet_at_most_so_many_a_day(ca_store, store_path, tmp_path):
    count, per_day = 10, 4
    names = [f"SEP{index:012X}" for index in range(0xE1, 0xE1 + count)]
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"validity_days": 20, "scheduler_interval_seconds": 1})
        for name in names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
    capf_pem = authority.current(ca_store)["pem"]
    identities = _identities(names)
    with open(tmp_path / "serve.log", "w", encoding="utf-8") as log:
        process, port = _start(store_path, log)
        try:
            assert _fleet(identities, port, capf_pem)["ok"] == count
            off = _renew(store_path)
            assert off["enabled"] is False and off["changed"] is False and off["scheduled"] == []
            # Renewal on: the service's own scheduler schedules the first day's batch, soonest expiry first.
            with ca_store.transaction() as tx:
                service_records.write(tx, "test", {"validity_days": 365, "renew_before_days": 30,
                                                   "renew_max_per_day": per_day})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _pending(ca_store) < per_day:
                time.sleep(0.2)
            first = _pending_names(ca_store)
            assert len(first) == per_day
            assert _renew(store_path)["scheduled"] == []  # the day's bound is reached: a re-run changes nothing
            rounds = [set(first)]
            start = utc_now()
            for day in (1, 2, 3):
                summary = _fleet(identities, port, capf_pem)  # every phone calls; the renewed ones enrol again
                assert summary["ok"] == count, summary
                assert _pending(ca_store) == 0
                now = format_utc(start + datetime.timedelta(hours=25 * day))
                # The days to come: the renewal function in this process, as at them (``renew run --now`` acts
                # as at no time the host's clock has not reached; test_cli_now_clock.py walks it in the past).
                result = renewal.run(ca_store, now)
                again = renewal.run(ca_store, now)
                assert again["changed"] is False and again["scheduled"] == []
                rounds.append({item["name"] for item in result["scheduled"]})
        finally:
            _stop(process)
    assert [len(names_) for names_ in rounds] == [4, 4, 2, 0]
    assert set().union(*rounds) == set(names)
    for name in names:
        history = _lscs(ca_store, name)
        assert [row["status"] for row in history] == ["revoked", "installed"], (name, history)
        left = parse_utc(history[1]["not_after"], "not_after") - utc_now()
        assert left > datetime.timedelta(days=300)
    with ca_store.read() as tx:
        events = tx.query("SELECT action, subject, details FROM audit_events WHERE action IN "
                          "('phone.update', 'renewal.schedule') ORDER BY id")
        renewed = tx.query("SELECT outcome, COUNT(*) AS n FROM sessions WHERE operation = 'install_upgrade' "
                           "GROUP BY outcome")
    updates = [json.loads(event["details"]) for event in events if event["action"] == "phone.update"]
    assert sorted(event["subject"] for event in events if event["action"] == "phone.update") == sorted(names)
    assert all(details == {"certificate_operation": "install_upgrade", "operation_status": "pending",
                           "via": "renewal"} or details == {"operation_status": "pending", "via": "renewal"}
               for details in updates), updates
    assert [json.loads(event["details"])["scheduled"] for event in events
            if event["action"] == "renewal.schedule"] == [4, 4, 2]
    assert renewed == [{"outcome": "succeeded", "n": 2 * count}]


def _pending_names(store):
    with store.read() as tx:
        return [row["name"] for row in tx.query("SELECT name FROM phones WHERE operation_status = 'pending'")]


def _pending(store):
    return len(_pending_names(store))

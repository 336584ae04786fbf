"""The certificate monitor inside ``opencapf serve``: it checks at the service's first tick, and an SMTP relay
that is down or refuses the login is retried, logged and recorded while a phone enrols over TLS meanwhile.
The enrolled LSC then reaches the 30-day threshold and ``opencapf monitor run`` mails it to a working relay;
the SMTP password appears in no log, no command line and no CLI output."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import signal
import time

import pytest

from support import pki
from support.capf_validity import upload_capf
from support.protocol import add_phone, certificate_rows
from support.smtp import PASSWORD, SmtpRelay, free_port
from support.serving import Serving
from support.tools import run_cli
from _opencapf import monitor, service_config
from _opencapf.ca import authority
from _opencapf.dependencies import ec
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf import trust as trust_certificates
from _opencapf.vocabulary import format_utc, utc_now

PHONE = "SEP00000000F0A1"


def _serve(store_path, log):
    serving = Serving(store_path, None, log.name, cli_options=("-v",)).start("--step-timeout", "30")
    return serving.process, serving.port


def _command_lines(pid):
    """The command lines of a process and its children, as ``ps`` shows them."""
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
        children = [int(child) for child in handle.read().split()]
    lines = []
    for task in [pid] + children:
        with open(f"/proc/{task}/cmdline", "rb") as handle:
            lines.append(handle.read().replace(b"\0", b" ").decode())
    return lines


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _last_run(store):
    with store.read() as tx:
        return tx.one("SELECT result, attempts, error, mails_sent FROM monitor_runs ORDER BY id DESC LIMIT 1")


@pytest.mark.parametrize("failure", ["relay down", "login refused"])
def test_relay_failures_are_retried_and_recorded_while_a_phone_enrols(ca_store, store_path, tmp_path, failure):
    relay = SmtpRelay(tmp_path, refuse_login=failure == "login refused")
    try:
        settings = relay.settings()
        if failure == "relay down":
            settings["monitor_smtp_port"] = free_port()
        settings.update(validity_days=20, scheduler_interval_seconds=1)
        service_config.converge(ca_store, parameters_wanted=settings, monitor_smtp_password=PASSWORD)
        partner, _key = pki.make_cert("Partner Root", days=10)  # something for the first check to find
        trust_certificates.converge(ca_store, trust_store="callmanager-trust", content=pki.pem(partner))
        add_phone(ca_store, PHONE, operation="install_upgrade", auth_mode="null_string", key_order="ec")
        capf_pem = authority.current(ca_store)["pem"]
        identity = PhoneIdentity(PhoneSettings(PHONE), key_factory=lambda kind, size: ec.generate_private_key(
            ec.SECP256R1()))

        log_path = tmp_path / "serve.log"
        with open(log_path, "w", encoding="utf-8") as log:
            process, port = _serve(store_path, log)
            try:
                outcome = asyncio.run(asyncio.wait_for(enrol(identity, Target(("127.0.0.1",), port, cadata=capf_pem,
                                                                              timeout=30)), 60))
                recorded = _wait(lambda: _last_run(ca_store) is not None, 30)
                command_lines = _command_lines(process.pid)
                running = process.poll() is None
            finally:
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=60)
        text = log_path.read_text()
        assert outcome.ok, (outcome, text)
        assert recorded and running and process.returncode == 0, text
        assert [row["status"] for row in certificate_rows(ca_store, PHONE)] == ["installed"]
        run = _last_run(ca_store)
        assert (run["result"], run["attempts"], run["mails_sent"]) == ("failed", 3, 0), text
        expected = "ConnectionRefusedError" if failure == "relay down" else "SMTPAuthenticationError: 535"
        assert run["error"].startswith(expected)
        assert text.count("failed (attempt") == 3 and "monitor: checked the certificates: failed" in text, text
        assert "Traceback" not in text

        outputs = [text, *command_lines]
        if failure == "login refused":
            shown = run_cli("--store", store_path, "--json", "monitor", "show", check=True)
            state = json.loads(shown.stdout)
            assert state["monitor"]["last_run"]["error"] == run["error"]
            assert {item["subject"] for item in state["expiring_certificates"]} == {"Partner Root", PHONE}
            outputs += [shown.stdout, shown.stderr]

            # The relay accepts the login again: the next check mails the trust certificate and the new LSC.
            relay.refuse_login = False
            result = monitor.check(ca_store)
            assert (result["result"], result["mails_sent"]) == ("sent", 1)
            rows = list(csv.DictReader(io.StringIO(
                next(relay.messages[0]["message"].iter_attachments()).get_content())))
            lsc = certificate_rows(ca_store, PHONE)[0]
            assert [(row["kind"], row["device_name"], row["serial"], row["threshold"]) for row in rows] == [
                ("callmanager-trust", "", "", "30"), ("lsc", PHONE, lsc["serial"], "30")]
        for output in outputs:
            assert PASSWORD not in output
    finally:
        relay.stop()


def test_monitor_run_with_a_clock_on_both_backends(store_options, store_on_both, tmp_path):
    """``monitor run --now`` checks at another time, with the store on either backend: the CAPF certificate
    ends in 12 hours (threshold 1 now), and a check as at 6 days and an hour before its end, a time the
    host's clock has passed (``monitor run`` refuses a later one), warns at threshold 7."""
    relay = SmtpRelay(tmp_path)
    try:
        end = utc_now() + dt.timedelta(hours=12)
        upload_capf(store_on_both, end - dt.timedelta(days=1000), 1000)
        service_config.converge(store_on_both, parameters_wanted=relay.settings(), monitor_smtp_password=PASSWORD)
        assert authority.current(store_on_both)["not_after"] == format_utc(end)
        sent = run_cli(*store_options, "--json", "monitor", "run", "--now",
                       (end - dt.timedelta(days=6, hours=1)).isoformat(), check=True)
        result = json.loads(sent.stdout)
        assert (result["result"], [item["threshold"] for item in result["certificates"]]) == ("sent", [7])
        assert len(relay.messages) == 1 and PASSWORD not in sent.stdout + sent.stderr
    finally:
        relay.stop()

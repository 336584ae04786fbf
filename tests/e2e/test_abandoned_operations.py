"""An operation is never left ``in_progress`` without a live session: when the CAPF service is killed
mid-session (SIGKILL, power loss), the restarted service's scheduler settles the operation once the
session's time bound has passed, with the reason, and the phone's next session completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.tools import ENGINE_PATH
from _opencapf.ca import authority
from _opencapf.faults import ENV_CRASH_AT
from _opencapf.server.decider import LIVENESS_MARGIN_SECONDS
from _opencapf.store import audit
from _opencapf.store import service as service_records

NAME = "SEP00000000AB01"
BOUND = 2  # serve --max-session-seconds


def _serve(store_path, log, crash_at=None):
    env = {**os.environ, "PYTHONPATH": ENGINE_PATH}
    env.pop(ENV_CRASH_AT, None)
    if crash_at:
        env[ENV_CRASH_AT] = crash_at
    process = subprocess.Popen([sys.executable, "-m", "_opencapf", "--store", store_path, "serve", "--listen",
                                "127.0.0.1", "--port", "0", "--enrolment-interval", "0", "--max-session-seconds",
                                str(BOUND)], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("listening on"):
        process.kill()
        raise AssertionError(f"serve did not start: {line!r}")
    return process, int(line.split()[-1])


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_an_operation_cut_by_a_killed_service_is_settled_and_then_completed(ca_store, store_path, tmp_path):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, NAME)
    capf_pem = authority.current(ca_store)["pem"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "w", encoding="utf-8") as log:
        # The service dies (SIGKILL) right after it committed the LSC, before the phone stores it.
        killed, port = _serve(store_path, log, crash_at="lsc.committed:1")
        result = run_enrol(identity, SimpleNamespace(port=port, capf_pem=capf_pem))
        assert killed.wait(30) == -signal.SIGKILL
        assert result.outcome == "communication_failure"
        assert phone_row(ca_store, NAME)["operation_status"] == "in_progress"  # no process serves it now

        restarted, port = _serve(store_path, log)
        try:
            settled = _wait(lambda: phone_row(ca_store, NAME)["operation_status"] != "in_progress",
                            BOUND + LIVENESS_MARGIN_SECONDS + 15)
            row = phone_row(ca_store, NAME)
            again = run_enrol(identity, SimpleNamespace(port=port, capf_pem=capf_pem))
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.communicate(timeout=60)
    text = log_path.read_text()
    assert settled, text
    assert row["operation_status"] == "failed"
    assert row["operation_reason"].startswith("session ended without a result: the CAPF service stopped "
                                              "mid-session"), dict(row)
    assert f"settled as failed: {NAME}" in text and "Traceback" not in text
    with ca_store.read() as tx:
        events = audit.events(tx, action="phone.operation_failed", subject=NAME)
    assert [(event["actor"], event["details"]["reason"]) for event in events] == [
        ("scheduler", row["operation_reason"])]
    assert again.outcome == "ok"
    assert phone_row(ca_store, NAME)["operation_status"] == "succeeded"

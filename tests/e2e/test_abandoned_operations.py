"""An operation is never left ``in_progress`` without a live session: when the CAPF service is killed
mid-session (SIGKILL, power loss), the restarted service's scheduler settles the operation once the
session's time bound has passed, with the reason, and the phone's next session completes it.

SQLite only, for CI time (it waits out the session bound): on PostgreSQL the settling is
tests/unit/plugins/module_utils/server/test_session_bound.py's and a service killed mid-session and
restarted is test_crash_faults.py's."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving, wait_for
from _opencapf.ca import authority
from _opencapf.server.decider import LIVENESS_MARGIN_SECONDS
from _opencapf.store import audit
from _opencapf.store import service as service_records

NAME = "SEP00000000AB01"
BOUND = 2  # serve --max-session-seconds
OPTIONS = ("--enrolment-interval", "0", "--max-session-seconds", str(BOUND))


def test_an_operation_cut_by_a_killed_service_is_settled_and_then_completed(ca_store, tmp_path):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, NAME)
    capf_pem = authority.current(ca_store)["pem"]
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    # The service dies (SIGKILL) right after it committed the LSC, before the phone stores it.
    serving.start(*OPTIONS, crash_at="lsc.committed:1")
    result = run_enrol(identity, SimpleNamespace(port=serving.port, capf_pem=capf_pem))
    assert serving.process.wait(30) == -signal.SIGKILL
    assert result.outcome == "communication_failure"
    assert phone_row(ca_store, NAME)["operation_status"] == "in_progress"  # no process serves it now

    with serving.start(*OPTIONS):
        settled = wait_for(lambda: phone_row(ca_store, NAME)["operation_status"] != "in_progress",
                           BOUND + LIVENESS_MARGIN_SECONDS + 15)
        row = phone_row(ca_store, NAME)
        again = run_enrol(identity, SimpleNamespace(port=serving.port, capf_pem=capf_pem))
    text = serving.log()
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

"""A phone whose session step meets a writer that took the store's write lock after the step's look (the look
found it free, the step's write then finds it held) is served once the lock is free, within the step timeout,
never failed for it: the step, which had written nothing, is undone and awaits the lock as one whose look
found it held does, then runs again; on either backend, at each of the writes of an enrolment (the
authentication string's check after the session's read, the LSC's issuance, the installation at the end).

Real processes and parts throughout: ``opencapf serve`` on a real store, the phone simulator over real TLS;
the other writer is a connection (PostgreSQL) or lock file descriptor (SQLite) of its own that the service's
process opens just before its event loop begins the chosen write transaction (``lock_taken_before_a_write``),
as a long ``opencapf apply`` elsewhere would take the lock at that moment."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving, wait_for
from support.writers import lock_taken_before_a_write
from _opencapf.ca import authority
from _opencapf.store import sessions as session_records

pytestmark = pytest.mark.both_backends

NAME = "SEP00000000CC01"
AUTH_STRING = "12345678"
STEP_TIMEOUT = 10  # serve --step-timeout: far longer than the hold
HOLD_SECONDS = 1.5
# The event loop's write transactions of one enrolment by CAPF with an authentication string, in order.
WRITES = {1: "the authentication string's check", 2: "the LSC's issuance", 3: "the installation at the session's end"}


@pytest.mark.parametrize("write", sorted(WRITES), ids=("authentication", "issuance", "installation"))
def test_a_step_whose_write_meets_a_lock_taken_after_its_look_is_served_once_the_lock_is_free(
        ca_store, tmp_path, write):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec", auth_mode="auth_string",
              auth_string=AUTH_STRING)
    identity = phone(tmp_path, NAME, auth_mode="auth_string", auth_string=AUTH_STRING)
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    shadow, env, report = lock_taken_before_a_write(tmp_path / "taker", write, HOLD_SECONDS)
    serving = Serving.on(ca_store, tmp_path / "serve.log", python_path=(shadow,), env={**os.environ, **env})
    with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        started = time.time()
        result = run_enrol(identity, capf)
        ended = time.time()
        text = serving.log()
    assert os.path.exists(report), f"the other writer never took the lock before {WRITES[write]}"
    with open(report, encoding="ascii") as taken_at:
        taken = float(taken_at.read())
    assert result.outcome == "ok", (WRITES[write], result, text)
    # Served after the other writer let the lock go (the step awaited it), within the step timeout.
    assert ended - taken >= HOLD_SECONDS * 0.9, (ended - taken, text)
    assert ended - started < STEP_TIMEOUT, ended - started
    row = phone_row(ca_store, NAME)
    assert row["operation_status"] == "succeeded" and row["auth_failures"] == 0, dict(row)
    assert "Traceback" not in text and ": failed" not in text, text


def test_a_session_record_whose_write_meets_a_lock_taken_after_its_look_is_recorded_once_the_lock_is_free(
        ca_store, tmp_path):
    """A session that ends before its device is known (a name the store does not hold) is recorded by the
    service on its own, in one write transaction: that write, meeting a lock taken after its look, awaits it
    too and records the session, rather than leave it unrecorded."""
    name = "SEP00000000CCFF"  # not in the store
    identity = phone(tmp_path, name)
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    shadow, env, report = lock_taken_before_a_write(tmp_path / "taker", 1, HOLD_SECONDS)
    serving = Serving.on(ca_store, tmp_path / "serve.log", python_path=(shadow,), env={**os.environ, **env})
    with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        result = run_enrol(identity, capf)
        assert wait_for(lambda: name in _recorded(ca_store), HOLD_SECONDS + STEP_TIMEOUT), serving.log()
        text = serving.log()
    assert os.path.exists(report), "the other writer never took the lock before the session's record"
    assert result.outcome == "unknown_device", result
    assert "not recorded" not in text and "Traceback" not in text, text


def _recorded(store) -> list[str]:
    with store.read() as tx:
        return [row["device_name"] for row in session_records.recent(tx, limit=1000)]

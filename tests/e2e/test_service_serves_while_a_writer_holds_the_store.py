"""The CAPF service never stops serving because another writer holds the store: while another process
holds the store's write lock for a long time (an atomic change, what a long ``opencapf apply`` does),
the service goes on accepting connections and answering TLS handshakes, and a session that needs to
write waits for the lock at most its step timeout, then ends failed: the phone gets END_SESSION, the
log names the cause, and the session has written nothing. Once the writer is done, phones enrol again.

Real processes throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic``) and
the phone simulator; on SQLite the lock is the file lock beside the store, on PostgreSQL the writers'
advisory lock (the service asks whether another session holds it before each step, as it asks SQLite)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from support.writers import handshake_seconds, start_holder
from _opencapf.ca import authority
from _opencapf.store import sessions as session_records

pytestmark = pytest.mark.both_backends

NAME = "SEP00000000CA01"
STEP_TIMEOUT = 2  # serve --step-timeout: the longest a session's step waits for the write lock
HOLD_SECONDS = 60  # far longer than the test needs: the holder is killed (its change rolled back) at the end


def _session_rows(store):
    with store.read() as tx:
        return [row["device_name"] for row in session_records.recent(tx, limit=1000)]


def test_the_service_serves_on_while_another_process_holds_the_write_lock(ca_store, tmp_path):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    before = dict(phone_row(ca_store, NAME))
    identity = phone(tmp_path, NAME)
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    holder = None
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        try:
            holder = start_holder(ca_store, HOLD_SECONDS)
            ended = {}

            def enrol():
                started = time.monotonic()
                ended["result"] = run_enrol(identity, capf)
                ended["seconds"] = time.monotonic() - started

            session = threading.Thread(target=enrol)
            session.start()
            time.sleep(0.5)  # the session is waiting for the lock by now
            # The service accepts a connection and completes its handshake meanwhile, at once.
            assert handshake_seconds(serving.port) < 1.5
            session.join(STEP_TIMEOUT + 30)
            assert not session.is_alive(), "the session hung while the other writer held the store"
            assert holder.poll() is None, "the other writer still holds the store"
        finally:
            if holder is not None and holder.poll() is None:
                holder.kill()  # its change is rolled back
                holder.communicate()
        result = ended["result"]
        assert result.outcome == "failed" and result.end_reason == 7, result  # END_SESSION, INVALID_ELEMENT
        assert ended["seconds"] < STEP_TIMEOUT + 5
        # Nothing of the session was written: the phone as before it, no session record.
        assert dict(phone_row(ca_store, NAME)) == before
        assert NAME not in _session_rows(ca_store)
        # Once the writer is gone, the phone enrols.
        again = run_enrol(identity, capf)
        text = serving.log()
    # The step that would have written is the phone's AUTH_RESPONSE: not run, its device not named.
    assert ": failed (another writer (such as a long 'opencapf apply') held the store's write lock for longer than " \
           f"the step may wait ({STEP_TIMEOUT} s); nothing of the step was written); the session is not recorded" \
           in text, text
    assert "Traceback" not in text, text
    assert again.outcome == "ok", again
    assert phone_row(ca_store, NAME)["operation_status"] == "succeeded"

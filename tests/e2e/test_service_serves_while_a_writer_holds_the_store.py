"""The CAPF service never stops serving because another writer holds the store: while another process
holds the store's write lock for a long time (an atomic change, what a long ``opencapf apply`` does),
the service goes on accepting connections and answering TLS handshakes, and a session that needs to
write waits for the lock at most its step timeout, then ends failed: the phone gets END_SESSION, the
log names the cause, and the session has written nothing. Once the writer is done, phones enrol again.

Real processes throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic``) and
the phone simulator; on SQLite the lock is the file lock beside the store, on PostgreSQL the writers'
advisory lock (the service asks whether another session holds it before each step, as it asks SQLite)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from support.tools import ENGINE_PATH
from _opencapf.ca import authority
from _opencapf.store import sessions as session_records

pytestmark = pytest.mark.both_backends

NAME = "SEP00000000CA01"
STEP_TIMEOUT = 2  # serve --step-timeout: the longest a session's step waits for the write lock
HOLD_SECONDS = 60  # far longer than the test needs: the holder is killed (its change rolled back) at the end

HOLDER = textwrap.dedent("""\
    import sys, time
    from _opencapf.store import open_store
    from _opencapf.store import service as service_records
    location, state_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open_store(location, state_dir=state_dir, actor="holder", create=False) as store:
        with store.atomic() as tx:
            service_records.write(tx, "holder", {"keepalive_minutes": 14})
            print("holding", flush=True)
            time.sleep(seconds)
""")


def _handshake_seconds(port: int) -> float:
    """A TLS handshake with the service, as a phone's begins; how long it took."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            assert tls.version()
    return time.monotonic() - started


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
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, ca_store.location, ca_store.state_dir,
                                       str(HOLD_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=dict(os.environ, PYTHONPATH=ENGINE_PATH))
            assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
            ended = {}

            def enrol():
                started = time.monotonic()
                ended["result"] = run_enrol(identity, capf)
                ended["seconds"] = time.monotonic() - started

            session = threading.Thread(target=enrol)
            session.start()
            time.sleep(0.5)  # the session is waiting for the lock by now
            # The service accepts a connection and completes its handshake meanwhile, at once.
            assert _handshake_seconds(serving.port) < 1.5
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

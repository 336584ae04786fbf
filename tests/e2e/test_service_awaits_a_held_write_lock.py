"""Phones that reach the CAPF service while another process holds the store's write lock for a while (a
long ``opencapf apply``, shorter than the step timeout) are served once it is released, on either backend:
each session's step awaits the lock, the event loop serving every other connection meanwhile (TLS
handshakes are answered at once throughout), and enrols its phone when the lock is free again. On
PostgreSQL the lock is the writers' advisory lock, held by another connection to the database.

Real processes throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic`` that
commits after ``HOLD_SECONDS``) and the phone simulator over real TLS."""

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

pytestmark = pytest.mark.both_backends

PHONES = 3
STEP_TIMEOUT = 10  # serve --step-timeout: far longer than the hold
HOLD_SECONDS = 2.0

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
    print("committed", flush=True)
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


def test_phones_are_served_once_a_write_lock_held_shorter_than_the_step_timeout_is_released(ca_store, tmp_path):
    names = [f"SEP00000000CB{index:02X}" for index in range(PHONES)]
    identities = []
    for name in names:
        add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
        identities.append(phone(tmp_path, name))
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, ca_store.location, ca_store.state_dir,
                                   str(HOLD_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONPATH=ENGINE_PATH))
        try:
            assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
            held_since = time.monotonic()
            ended = {}

            def enrol(index):
                ended[index] = (run_enrol(identities[index], capf), time.monotonic())

            sessions = [threading.Thread(target=enrol, args=(index,)) for index in range(PHONES)]
            for session in sessions:
                session.start()
            handshakes = []
            while time.monotonic() - held_since < HOLD_SECONDS:
                time.sleep(0.2)
                handshakes.append(_handshake_seconds(serving.port))
            for session in sessions:
                session.join(STEP_TIMEOUT + 30)
            assert not any(session.is_alive() for session in sessions), "a session hung"
            output, errors = holder.communicate(timeout=30)
            assert holder.returncode == 0 and output.strip() == "committed", errors
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.communicate()
        text = serving.log()
    # The loop answered every handshake at once while the sessions awaited the lock.
    assert handshakes and max(handshakes) < 1.0, handshakes
    for index, name in enumerate(names):
        result, at = ended[index]
        assert result.outcome == "ok", (name, result, text)
        # served after the holder let the lock go (not before: the lock was held), within the step timeout
        assert HOLD_SECONDS * 0.75 <= at - held_since < STEP_TIMEOUT, at - held_since
        assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    assert "Traceback" not in text and ": failed" not in text, text

"""Another process that holds a store's write lock (an atomic change, what a long ``opencapf apply``
does), and how long a TLS handshake with the CAPF service takes meanwhile: what the tests of a service
that serves on while another writer holds the store share."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time

from .tools import ENGINE_PATH

# The holder: opens the store, writes a service parameter in one atomic change, says "holding", keeps the
# change (and the write lock) ``seconds``, commits, says "committed".
_HOLDER = textwrap.dedent("""\
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


# A ``sitecustomize`` for an ``opencapf serve`` (``lock_taken_before_a_write``): just before the service's event
# loop begins its Nth write transaction, after the step's look found the write lock free, another writer (a
# connection or lock file descriptor of its own) takes the lock, writes the moment to the report file and
# lets the lock go ``seconds`` later.
_TAKER = textwrap.dedent("""\
    import os, threading, time
    _plan = os.environ.get("OPENCAPF_TEST_LOCK_BEFORE_WRITE")
    if _plan:
        from _opencapf.store import postgresql, sqlite
        _number, _seconds, _report = _plan.split(" ", 2)
        _writes = [0]

        def _take_postgresql(backend):
            import psycopg
            connection = psycopg.connect(backend._conninfo, autocommit=True, application_name="opencapf")
            connection.execute("BEGIN")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (postgresql.WRITE_LOCK_KEY,))

            def release():
                connection.execute("COMMIT")
                connection.close()
            return release

        def _take_sqlite(backend):
            import fcntl
            descriptor = os.open(backend.location + sqlite.WRITER_LOCK_SUFFIX, os.O_RDWR)
            fcntl.flock(descriptor, fcntl.LOCK_EX)

            def release():
                fcntl.flock(descriptor, fcntl.LOCK_UN)
                os.close(descriptor)
            return release

        def _hooked(backend_class, take):
            begin = backend_class.transaction

            def transaction(self, write=True, durable=True):
                if write and threading.get_ident() == self.deferring_thread:
                    _writes[0] += 1
                    if _writes[0] == int(_number):
                        threading.Timer(float(_seconds), take(self)).start()
                        with open(_report, "w", encoding="ascii") as report:
                            report.write(f"{time.time()}\\n")
                return begin(self, write, durable)
            backend_class.transaction = transaction

        _hooked(postgresql.PostgresBackend, _take_postgresql)
        _hooked(sqlite.SqliteBackend, _take_sqlite)
""")


def lock_taken_before_a_write(directory, write: int, seconds: float) -> tuple[str, dict, str]:
    """What makes an ``opencapf serve`` meet a writer that took the store's write lock after the step's look:
    just before the event loop's ``write``-th write transaction (counted from 1 in the process), another writer
    takes the lock and holds it ``seconds``. Returns the directory to search first (``Serving(python_path=)``),
    the environment to add, and the file that tells when (``time.time()``) the lock was taken."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "sitecustomize.py"), "w", encoding="utf-8") as module:
        module.write(_TAKER)
    report = os.path.join(directory, "taken")
    return str(directory), {"OPENCAPF_TEST_LOCK_BEFORE_WRITE": f"{write} {seconds} {report}"}, report


def start_holder(store, seconds: float) -> subprocess.Popen:
    """A process that holds the write lock of ``store`` for ``seconds``, then commits; returns once it
    holds it. Kill it to roll its change back."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, store.location, store.state_dir, str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ENGINE_PATH))
    line = holder.stdout.readline().strip()
    if line != "holding":
        holder.kill()
        raise AssertionError(f"the holder did not take the lock: {line!r} {holder.communicate()[1]}")
    return holder


def handshake_seconds(port: int) -> float:
    """A TLS handshake with the service, as a phone's begins; how long it took."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            assert tls.version()
    return time.monotonic() - started


def enrol_beside_a_holder(store, port: int, enrol, phones: int, hold_seconds: float, step_timeout: float, *,
                          look_for: float, pause: float) -> tuple[dict, list[float], float]:
    """``enrol(index)`` for ``phones`` phones at once (each returning its result) while a holder process keeps
    the write lock of ``store`` for ``hold_seconds`` (``start_holder``), and a TLS handshake with the service
    on ``port`` every ``pause`` seconds for the first ``look_for`` seconds of the hold. Returns each phone's
    result with the moment it ended, the handshakes' seconds, and the moment the hold began (``time.monotonic``)."""
    holder = start_holder(store, hold_seconds)
    try:
        held_since = time.monotonic()
        ended = {}

        def run(index):
            ended[index] = (enrol(index), time.monotonic())

        sessions = [threading.Thread(target=run, args=(index,)) for index in range(phones)]
        for session in sessions:
            session.start()
        handshakes = []
        while time.monotonic() - held_since < look_for:
            time.sleep(pause)
            handshakes.append(handshake_seconds(port))
        for session in sessions:
            session.join(step_timeout + 30)
        assert not any(session.is_alive() for session in sessions), "a session hung"
        output, errors = holder.communicate(timeout=30)
        assert holder.returncode == 0 and output.strip() == "committed", errors
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    return ended, handshakes, held_since

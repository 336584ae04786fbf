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

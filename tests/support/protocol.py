"""The CAPF protocol service in tests: a server thread, phones in the store, openssl checks."""

from __future__ import annotations

import asyncio
import socket
import threading

from support.store_phones import create_phone
from support.tools import openssl
from _opencapf.ca import authority
from _opencapf.ca import certificates as _certificates
from _opencapf.protocol.codec import Decoder
from _opencapf.server import event_loop
from _opencapf.server.service import CapfServer, ServerOptions
from _opencapf.store import open_store
from _opencapf.store import phones as _phones

EVENT_LOOPS = ("asyncio", "uvloop")  # the loops the CAPF service runs on (serve --event-loop)
HAS_IPV6_LOOPBACK = False
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _probe:
        _probe.bind(("::1", 0))
    HAS_IPV6_LOOPBACK = True
except OSError:
    pass


class RunningServer:
    """A CapfServer on its own event loop (``loop``: asyncio or uvloop) in a background thread, with its own
    connection to ``store`` (an open store, whichever its backend, or the path of an SQLite one)."""

    def __init__(self, store, addresses=("127.0.0.1",), loop="asyncio", **options):
        if isinstance(store, str):
            self.store = open_store(store, actor="capf-server")
        else:
            self.store = open_store(store.location, state_dir=store.state_dir, actor="capf-server")
        self.server = CapfServer(self.store, ServerOptions(addresses=tuple(addresses), port=0, **options))
        self.loop = event_loop.factory(loop)()
        self._thread = threading.Thread(target=self.loop.run_forever, name="capf-test-server", daemon=True)
        self._thread.start()
        self.bound = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self._forever = asyncio.run_coroutine_threadsafe(self.server.serve_forever(), self.loop)
        self.port = self.bound[0][1]
        self.capf_pem = authority.current(self.store)["pem"]

    def stop(self):
        self._forever.cancel()
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=2), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.store.close()


def add_phone(store, name, *, auth_string=None, **settings):
    """Put a phone with CAPF settings (store columns, ``store_phones.create_phone``) into the store."""
    secret = store.secret() if auth_string is not None else b""
    with store.transaction() as tx:
        return create_phone(tx, name, secret=secret, auth_string=auth_string, **settings)


def phone_row(store, name):
    with store.read() as tx:
        return _phones.get(tx, name)


def certificate_rows(store, name, kind="lsc"):
    with store.read() as tx:
        phone = _phones.get(tx, name)
        if phone is None:  # removed: its certificates went with it
            return []
        return tx.query("SELECT * FROM certificates WHERE phone_id = ? AND kind = ? ORDER BY id", (phone["id"], kind))


def openssl_verify(capf_pem, lsc_pem, tmp_path):
    """``openssl verify`` of an LSC against the CAPF certificate; returns the CompletedProcess."""
    ca = tmp_path / "capf-ca.pem"
    leaf = tmp_path / "lsc-to-verify.pem"
    ca.write_text(capf_pem)
    leaf.write_text(lsc_pem if isinstance(lsc_pem, str) else _certificates.to_pem(lsc_pem))
    return openssl("verify", "-CAfile", str(ca), str(leaf))


def openssl_verify_all(capf_pem, pems, tmp_path) -> int:
    """``openssl verify`` of many LSCs at once against the CAPF certificate; the number that verify."""
    ca = tmp_path / "capf-ca.pem"
    ca.write_text(capf_pem)
    files = []
    for index, pem in enumerate(pems):
        path = tmp_path / f"lsc-{index}.pem"
        path.write_text(pem)
        files.append(str(path))
    return openssl("verify", "-CAfile", str(ca), *files).stdout.decode().count(": OK")


def read_message(sock):
    """The first CAPF message read from a blocking socket (plain or TLS); None when it closes first."""
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        messages = decoder.feed(data)
        if messages:
            return messages[0]

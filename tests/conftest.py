"""Shared fixtures: the engine on sys.path, fresh stores, key material and openssl helpers."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)

from _opencapf.ca import authority  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import open_store  # noqa: E402  pylint: disable=wrong-import-position
from support.tools import openssl  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "state" / "capf.db")


@pytest.fixture
def store(store_path):
    """A fresh, migrated store with no CAPF certificate yet."""
    opened = open_store(store_path, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def ca_store(store):
    """A fresh store with an RSA-2048 CAPF certificate."""
    authority.ensure(store)
    return store


# -- CAPF protocol service and phone simulator --------------------------------------------------

import asyncio  # noqa: E402
import threading  # noqa: E402

from _opencapf import authstrings  # noqa: E402
from _opencapf.ca import certificates as _certificates  # noqa: E402
from _opencapf.server.service import CapfServer, ServerOptions  # noqa: E402
from _opencapf.store import phones as _phones  # noqa: E402
from _opencapf.store import service as _service  # noqa: E402

HAS_IPV6_LOOPBACK = False
try:
    import socket as _socket
    with _socket.socket(_socket.AF_INET6, _socket.SOCK_STREAM) as _probe:
        _probe.bind(("::1", 0))
    HAS_IPV6_LOOPBACK = True
except OSError:
    pass


class RunningServer:
    """A CapfServer on its own event loop in a background thread (its own store connection)."""

    def __init__(self, store_path, addresses=("127.0.0.1",), **options):
        self.store = open_store(store_path, actor="capf-server")
        self.server = CapfServer(self.store, ServerOptions(addresses=tuple(addresses), port=0, **options))
        self.loop = asyncio.new_event_loop()
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


@pytest.fixture
def capf_server(ca_store, store_path):
    """A running CAPF service on 127.0.0.1 (and ::1 when available), IPv6 enabled."""
    with ca_store.transaction() as tx:
        _service.write(tx, "test", {"enable_ipv6": True})
    addresses = ("127.0.0.1", "::1") if HAS_IPV6_LOOPBACK else ("127.0.0.1",)
    running = RunningServer(store_path, addresses, step_timeout=5.0, handshake_timeout=5.0)
    yield running
    running.stop()


def add_phone(store, name, *, auth_string=None, **settings):
    """Put a phone with CAPF settings into the store (an authentication string is hashed)."""
    with store.transaction() as tx:
        if auth_string is not None:
            salt, digest = authstrings.protect(store.secret(), auth_string)
            settings.update(auth_salt=salt, auth_hash=digest)
        settings.setdefault("operation_status", "pending" if settings.get("operation", "none") != "none" else "none")
        return _phones.create(tx, "test", name, **settings)


def phone_row(store, name):
    with store.read() as tx:
        return _phones.get(tx, name)


def certificate_rows(store, name, kind="lsc"):
    with store.read() as tx:
        phone = _phones.get(tx, name)
        return tx.query("SELECT * FROM certificates WHERE phone_id = ? AND kind = ? ORDER BY id", (phone["id"], kind))


def openssl_verify(capf_pem, lsc_pem, tmp_path):
    """``openssl verify`` of an LSC against the CAPF certificate; returns the CompletedProcess."""
    ca = tmp_path / "capf-ca.pem"
    leaf = tmp_path / "lsc-to-verify.pem"
    ca.write_text(capf_pem)
    leaf.write_text(lsc_pem if isinstance(lsc_pem, str) else _certificates.to_pem(lsc_pem))
    return openssl("verify", "-CAfile", str(ca), str(leaf))


@pytest.fixture
def mic_ca(ca_store, tmp_path):
    """A manufacturing CA, trusted in CAPF-trust of the test store."""
    from _opencapf.simulator.manufacturing import ManufacturingCa
    ca = ManufacturingCa.create(str(tmp_path / "mic-ca"))
    assert ca.trust_in(ca_store)
    return ca

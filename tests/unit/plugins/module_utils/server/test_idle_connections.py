"""What an idle connection holds in the service, checked on a real server over real sockets without
measuring memory (``scripts/bench --only hostile`` measures it): on every event loop, a connection whose
client has sent nothing has no TLS state (no server-side ``SSLSocket``) and takes no handshake slot, and
its first bytes start the handshake as ever."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time

import pytest

from support.protocol import EVENT_LOOPS, RunningServer, read_message
from _opencapf.protocol.constants import Command

COUNT = 6


def _eventually(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _in_loop(running: RunningServer, function):
    async def call():
        return function()
    return asyncio.run_coroutine_threadsafe(call(), running.loop).result(30)


def _server_tls_sockets() -> int:
    """The server side's TLS connections alive in this process (the test's clients are client side)."""
    gc.collect()
    return sum(1 for item in gc.get_objects()
               if isinstance(item, ssl.SSLSocket) and item.server_side and item.fileno() >= 0)


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_connections_hold_no_tls_state_before_their_first_byte(ca_store, loop):
    running = RunningServer(ca_store, loop=loop, handshake_timeout=60.0, step_timeout=60.0)
    held = []
    try:
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=30) for _index in range(COUNT)]
        assert _eventually(lambda: running.server.before_session == COUNT)
        assert running.server.handshaking == 0
        assert _in_loop(running, _server_tls_sockets) == 0

        context = _client_context()
        held = [context.wrap_socket(sock) for sock in held]  # their first bytes: the handshake runs as ever
        assert [read_message(sock).command for sock in held] == [Command.AUTH_REQUEST] * COUNT
        assert _eventually(lambda: running.server.active == COUNT)
        assert _in_loop(running, _server_tls_sockets) == COUNT
    finally:
        for sock in held:
            sock.close()
        running.stop()

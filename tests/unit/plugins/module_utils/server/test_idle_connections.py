"""What an idle connection holds in the service, checked on a real server over real sockets without
measuring memory (``scripts/bench --only hostile`` measures it): on every event loop, a connection whose
client has sent nothing has no TLS state and takes no handshake slot, and its first bytes start the
handshake as ever; on asyncio's loop the TLS connections of the service's thread read through one shared
receive buffer instead of keeping one each (uvloop's TLS keeps a buffer of its own, allocated but untouched
beyond what a read fills)."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time
from asyncio import sslproto

import pytest

from support.protocol import EVENT_LOOPS, RunningServer, read_message
from _opencapf.protocol.constants import Command
from _opencapf.server.admission import TLS_BUFFER_BYTES, compact_tls_buffers

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


def _tls_protocols(running: RunningServer) -> list:
    """The TLS protocols (asyncio's or uvloop's) of this server's event loop that are alive."""
    gc.collect()
    if isinstance(running.loop, asyncio.BaseEventLoop):
        return [item for item in gc.get_objects()
                if isinstance(item, sslproto.SSLProtocol) and getattr(item, "_loop", None) is running.loop]
    from uvloop import loop as uvloop_loop  # pylint: disable=import-outside-toplevel
    return [item for item in gc.get_objects() if isinstance(item, uvloop_loop.SSLProtocol)]


def _receive_buffers(running: RunningServer) -> list:
    return [(protocol._ssl_buffer, protocol.get_buffer(-1).obj)  # pylint: disable=protected-access
            for protocol in _tls_protocols(running)]


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("loop", EVENT_LOOPS)
def test_connections_hold_no_tls_state_before_their_first_byte_and_share_one_receive_buffer(ca_store, loop):
    compact_tls_buffers()  # as ``serve`` does for its process
    running = RunningServer(ca_store, loop=loop, handshake_timeout=60.0, step_timeout=60.0)
    held = []
    try:
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=30) for _index in range(COUNT)]
        assert _eventually(lambda: running.server.before_session == COUNT)
        assert running.server.handshaking == 0
        assert _in_loop(running, lambda: len(_tls_protocols(running))) == 0

        context = _client_context()
        held = [context.wrap_socket(sock) for sock in held]  # their first bytes: the handshake runs as ever
        assert [read_message(sock).command for sock in held] == [Command.AUTH_REQUEST] * COUNT
        assert _eventually(lambda: running.server.active == COUNT)
        assert _in_loop(running, lambda: len(_tls_protocols(running))) == COUNT
        if loop != "asyncio":
            return
        buffers = _in_loop(running, lambda: _receive_buffers(running))
        assert len(buffers) == COUNT
        assert all(own is None for own, _shared in buffers)  # no connection keeps a buffer of its own
        assert len({id(shared) for _own, shared in buffers}) == 1
        assert len(buffers[0][1]) == TLS_BUFFER_BYTES
    finally:
        for sock in held:
            sock.close()
        running.stop()

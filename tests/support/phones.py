"""Shared pieces of the end-to-end protocol tests."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder
from _opencapf.protocol.constants import Command
from _opencapf.protocol.phone import PhoneSession
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings


def target(server, addresses=("127.0.0.1",), **options) -> Target:
    options.setdefault("timeout", 10.0)
    options.setdefault("cadata", server.capf_pem)
    return Target(tuple(addresses), server.port, **options)


def run_enrol(identity, server, addresses=("127.0.0.1",), behaviour=None, retries=0, retry_interval=0.05,
              target_options=None, **options):
    return asyncio.run(asyncio.wait_for(
        enrol(identity, target(server, addresses, **(target_options or {})), behaviour=behaviour, retries=retries,
              retry_interval=retry_interval, **options), 60))


def enrol_until_ok(identity, server, seconds: float, **options):
    """``run_enrol`` again every half second, as a phone tries again later, until its session succeeds or
    ``seconds`` have passed; the last result."""
    deadline = time.monotonic() + seconds
    while True:
        result = run_enrol(identity, server, **options)
        if result.outcome == "ok" or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def phone(tmp_path, name, mic_ca=None, **settings) -> PhoneIdentity:
    return PhoneIdentity.create(str(tmp_path / "phones" / name), PhoneSettings(name, **settings), mic_ca=mic_ca)


class SteppedConnection:
    """One session of a phone over its own TLS connection, stepped by the test: ``until`` holds the
    session at a message of the service, so that the test acts before the phone answers it."""

    def __init__(self, port: int, identity):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15))
        self.server_certificate = self.sock.getpeercert(binary_form=True)  # the service's, as TLS showed it
        self.handset = PhoneSession(identity)
        self.decoder = Decoder()
        self.held = None  # a server message not answered yet

    def until(self, command: int) -> None:
        """Answer every server message up to the first ``command``, which is kept unanswered."""
        while True:
            data = self.sock.recv(65536)
            assert data, "the service closed the connection"
            for message in self.decoder.feed(data):
                if message.command == command:
                    self.held = message
                    return
                self.sock.sendall(self.handset.receive_data(codec.encode(message)))

    def answer_and_end(self) -> None:
        """Answer the kept message, then read to END_SESSION."""
        self.sock.sendall(self.handset.receive_data(codec.encode(self.held)))
        self.until(Command.END_SESSION)
        self.sock.close()

"""The CAPF service answers every phone promptly while its PostgreSQL store's host is silent (a network
cut: nothing refused, nothing answered, no connection reset), and enrols again once the host answers.

Invariant: while the host is silent, each of several phones that connect at once completes its TLS
handshake and hears its session failed (END_SESSION) within ``PROMPT`` seconds, not after a connect
timeout (10 s) of its own or a dead socket's wait (many minutes), and a TLS handshake alone is as prompt;
the log says once that the store cannot be reached, and names the store's error once per session; once
the host answers, the phone enrols.

Real processes throughout: ``opencapf serve`` on a store location that reaches PostgreSQL through a TCP
forwarder that falls silent (``support.silent_host``), and the phone simulator over real TLS."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import time
from types import SimpleNamespace

import pytest

from support.phones import enrol_until_ok, phone, target
from support.protocol import add_phone, phone_row
from support.serving import Serving, wait_for
from support.silent_host import SilentHost
from support.writers import handshake_seconds
from _opencapf.ca import authority
from _opencapf.server.scheduling import STOP_STORE_WAIT_SECONDS
from _opencapf.simulator.client import enrol
from _opencapf.store import service as service_records

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

NAMES = [f"SEP00000000CD{index:02X}" for index in range(4)]
PROMPT = 4.0  # seconds for a phone's whole session, or a TLS handshake, while the host is silent
BACK = 30.0  # seconds the phone may take to enrol once the host answers again


async def _timed(identity, capf) -> tuple[float, object]:
    started = time.monotonic()
    result = await enrol(identity, target(capf), retries=0)
    return time.monotonic() - started, result


async def _phones_at_once(identities, capf) -> list:
    return await asyncio.gather(*(_timed(identity, capf) for identity in identities))


def _handshake(port: int) -> float | str:
    try:
        return handshake_seconds(port)
    except (OSError, ssl.SSLError, socket.timeout) as exc:
        return f"no handshake: {exc!r}"


def test_phones_hear_promptly_while_the_store_host_is_silent_and_enrol_once_it_answers(ca_store, tmp_path):
    for name in NAMES:
        add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identities = [phone(tmp_path, name) for name in NAMES]
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    with SilentHost(ca_store.location) as host:
        serving = Serving(host.location, ca_store.state_dir, tmp_path / "serve.log")
        with serving.start("--enrolment-interval", "0", "--step-timeout", "2"):
            capf.port = serving.port
            host.silent()
            try:
                sessions = asyncio.run(asyncio.wait_for(_phones_at_once(identities, capf), 120))
                handshakes = [_handshake(serving.port) for _each in range(3)]
                later = asyncio.run(asyncio.wait_for(_phones_at_once(identities[:2], capf), 120))
                text = serving.log()
            finally:
                host.answering()
            again = enrol_until_ok(identities[0], capf, BACK)
            text_after = serving.log()
    timings = [(round(seconds, 2), result.outcome) for seconds, result in sessions + later]
    assert all(outcome == "failed" and seconds < PROMPT for seconds, outcome in timings), (timings, handshakes, text)
    assert all(isinstance(seconds, float) and seconds < PROMPT for seconds in handshakes), (handshakes, text)
    assert text.count("the store cannot be reached (") == 1, text
    sessions_logged = [line for line in text.splitlines() if "device SEP00000000CD" in line]
    assert len(sessions_logged) == len(timings), text
    # Each names the store's error once: as the reason the session failed, not again as why it is not recorded.
    assert all(": failed (" in line and line.endswith("; the session is not recorded") and line.count(host.location) == 1
               for line in sessions_logged), sessions_logged
    assert "Traceback" not in text_after and "internal error" not in text_after, text_after
    assert again.outcome == "ok", (again, text_after)
    assert "the store can be reached again after" in text_after, text_after
    assert phone_row(ca_store, NAMES[0])["operation_status"] == "succeeded"


# Seconds from SIGTERM to the process's end, whatever its store's host does: the scheduler's tick, the enrolment
# service's pass and the service's store threads are awaited until one deadline, ``STOP_STORE_WAIT_SECONDS`` after
# the stop began (no sessions run, so no grace); a margin well under a second such wait.
STOPPED_WITHIN = STOP_STORE_WAIT_SECONDS + 6
SILENT_SECONDS = 3  # scheduler ticks (1 s apart) and enrolment passes begin while the host is silent before the stop


@pytest.mark.parametrize("waiting", ["scheduler", "enrolment service"])
def test_serve_stops_within_a_bound_while_its_store_host_is_silent(ca_store, tmp_path, waiting):
    """Invariant: ``serve`` stops within ``STOPPED_WITHIN`` seconds of SIGTERM whatever its store's host does: also
    while the host is silent (a stuck network path that takes the bytes and answers nothing) and a round trip of
    its store work waits for it, which no libpq timeout ends (the path acknowledges every byte and keepalive): the
    scheduler's tick (on a connection of its own, in a thread of its own), or a pass of the enrolment service (in a
    store thread, on the connection it shares with the event loop)."""
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    with SilentHost(ca_store.location) as host:
        serving = Serving(host.location, ca_store.state_dir, tmp_path / "serve.log")
        enrolment = "1" if waiting == "enrolment service" else "0"
        with serving.start("--enrolment-interval", enrolment, "--step-timeout", "2"):
            assert wait_for(lambda: "monitor: checked the certificates" in serving.log(), 30), serving.log()
            time.sleep(1.5)  # the enrolment service's first pass has read the store (its connection is made)
            host.silent()  # the next tick's and the next pass's first read wait for the host
            try:
                time.sleep(SILENT_SECONDS)
                started = time.monotonic()
                serving.process.send_signal(signal.SIGTERM)
                try:
                    serving.process.communicate(timeout=STOPPED_WITHIN + 45)
                except subprocess.TimeoutExpired:
                    serving.process.kill()
                    serving.process.communicate()
                stopped = time.monotonic() - started
            finally:
                host.answering()
            text = serving.log()
    assert stopped < STOPPED_WITHIN, (round(stopped, 1), text)
    assert serving.process.returncode == 0, (serving.process.returncode, text)
    assert "Traceback" not in text, text

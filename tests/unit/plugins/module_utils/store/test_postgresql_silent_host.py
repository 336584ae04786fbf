"""A PostgreSQL store whose host falls silent (a network cut: nothing refused, nothing answered): its
connections ask the kernel to give up on the host within seconds (``tcp_user_timeout``, keepalives), and
the CAPF service's event loop (the deferring thread) waits ``LOOP_ROUND_TRIP_SECONDS`` at most, once: after
that its store work fails at once, touching nothing, until another thread has reached the store. A
connection the database ended (it answers) is made again on the loop, at no cost to the work that finds it.

The silent host is a real TCP forwarder in front of the tests' server (``support.silent_host``)."""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest

from support import leads
from support.silent_host import SilentHost
from _opencapf.errors import StoreUnreachable
from _opencapf.store import open_store, service
from _opencapf.store.postgresql import LOOP_ROUND_TRIP_SECONDS, UNANSWERED_SECONDS

AT_ONCE = 0.1  # seconds: work that touches nothing


@pytest.fixture
def host(postgres_dsn, state_dir):
    open_store(postgres_dsn, state_dir=state_dir, actor="test").close()  # the schema
    with SilentHost(postgres_dsn) as forwarder:
        yield forwarder


def _socket_option(store, level, option) -> int:
    fileno = store.backend._connection.pgconn.socket  # pylint: disable=protected-access
    with socket.fromfd(fileno, socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.getsockopt(level, option)


def _begun(transaction) -> None:
    with transaction:
        pass


def _in_a_thread(function):
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except Exception as exc:  # pylint: disable=broad-except  # told to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    return outcome


def test_a_connection_gives_up_on_a_silent_host_within_seconds_unless_the_location_says_otherwise(host, state_dir):
    with open_store(host.location, state_dir=state_dir, actor="test") as store:
        assert _socket_option(store, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == UNANSWERED_SECONDS * 1000
        assert _socket_option(store, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert _socket_option(store, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == UNANSWERED_SECONDS
    with open_store(host.location + "&tcp_user_timeout=30000&keepalives_idle=60", state_dir=state_dir,
                    actor="test") as store:
        assert _socket_option(store, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
        assert _socket_option(store, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60


def test_the_event_loop_waits_for_a_silent_host_once(host, postgres_dsn, state_dir):
    with open_store(host.location + "&connect_timeout=2", state_dir=state_dir, actor="test",
                    group_commit=True) as store:
        store.defer_durability()  # this thread is the event loop
        store.data_version()
        host.silent()
        started = time.monotonic()
        with pytest.raises(StoreUnreachable, match="did not answer within"):
            store.data_version()
        assert time.monotonic() - started < LOOP_ROUND_TRIP_SECONDS + 1
        for work in (store.data_version, lambda: _begun(store.read()), lambda: _begun(store.transaction())):
            started = time.monotonic()
            with pytest.raises(StoreUnreachable):
                work()
            assert time.monotonic() - started < AT_ONCE
        assert "error" in _in_a_thread(store.data_version)  # another thread connects, and finds nobody answers
        host.answering()
        with pytest.raises(StoreUnreachable):
            store.data_version()  # the event loop still leaves the store alone
        assert "value" in _in_a_thread(store.data_version)  # until another thread has reached it
        with store.transaction() as tx:
            service.write(tx, "test", {"validity_days": 400})
        with psycopg.connect(postgres_dsn, autocommit=True) as watch:  # the database ends the idle connection
            with store.read() as tx:
                pid = tx.scalar("SELECT pg_backend_pid() AS pid")
            leads.cut(watch, pid)
            leads.until(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
                        what="the end of the connection")
        with store.read() as tx:
            assert service.read(tx)["validity_days"] == 400
        store.defer_durability(False)

"""What one SQLite writer guaranteed must hold with several: here four stores (four connections, as
four CAPF hosts would have) write to one PostgreSQL database at once."""

from __future__ import annotations

import itertools
import threading
import time

import psycopg
import pytest

from _opencapf import authstrings
from _opencapf.ca import authority, lsc
from _opencapf.dependencies import ec
from _opencapf.errors import StoreBusy
from _opencapf.protocol.session import AuthOffer, Issued, Outcome
from _opencapf.server.decider import StoreDecider
from _opencapf.store import open_store
from _opencapf.store import service as service_records
from _opencapf.store.backend import LOOP_WRITER_LOCK_WAIT_SECONDS, writer_lock_wait_until
from _opencapf.store import postgresql
from _opencapf.store.postgresql import WRITE_LOCK_KEY
from support.protocol import add_phone, certificate_rows, phone_row
from support.store_phones import create_phone
from support.stores import held_by_another_writer, held_in_a_thread

NODES = 4
PHONE = "SEP001122334455"


@pytest.fixture
def nodes(postgres_dsn, state_dir):
    first = open_store(postgres_dsn, state_dir=state_dir, actor="node-0")
    authority.ensure(first)
    others = [open_store(postgres_dsn, state_dir=state_dir, actor=f"node-{index}") for index in range(1, NODES)]
    yield [first, *others]
    for store in (first, *others):
        store.close()


def _concurrently(stores, work) -> None:
    errors = []
    start = threading.Barrier(len(stores))

    def run(index, store):
        try:
            start.wait(10)
            work(index, store)
        except BaseException as exc:  # pylint: disable=broad-exception-caught  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index, store)) for index, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_serials_stay_unique_when_hosts_draw_the_same_ones(nodes, monkeypatch):
    """200 LSCs issued from four stores at once, every tenth serial drawn a second time (by whichever
    host comes next): the unique index refuses each clash, which is redrawn; none is recorded twice."""
    for index in range(10):
        add_phone(nodes[0], f"SEP0000000000{index:02d}")
    draws = itertools.count()
    draw_lock = threading.Lock()
    clashes = []
    real_insert = lsc.certificate_records.insert_new_serial

    def next_serial():
        with draw_lock:
            number = next(draws)
        return 2 ** 100 + (number - 1 if number % 10 == 9 else number)

    def insert(tx, **row):
        new_id = real_insert(tx, **row)
        if new_id is None:
            clashes.append(row["serial"])
        return new_id

    monkeypatch.setattr(lsc.x509, "random_serial_number", next_serial)
    monkeypatch.setattr(lsc.certificate_records, "insert_new_serial", insert)
    key = ec.generate_private_key(ec.SECP256R1())

    def issue(index, store):
        for number in range(200 // NODES):
            lsc.issue(store, f"SEP0000000000{(index + number) % 10:02d}", key.public_key(), create_phone=False)

    _concurrently(nodes, issue)
    with nodes[0].read() as tx:
        serials = [row["serial"] for row in tx.query("SELECT serial FROM certificates WHERE kind = 'lsc'")]
    assert len(serials) == 200 and len(set(serials)) == 200
    assert len(clashes) >= 15  # about one draw in ten clashed


def test_exactly_lockout_failures_guesses_are_evaluated_whichever_host_they_reach(nodes, monkeypatch):
    with nodes[0].transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 3})
    add_phone(nodes[0], PHONE, operation="install_upgrade", auth_mode="auth_string", auth_string="12345678")
    evaluated = []
    real_matches = authstrings.matches

    def counted(*args):
        evaluated.append(args[-1])
        return real_matches(*args)

    monkeypatch.setattr(authstrings, "matches", counted)

    def guess(index, store):
        for attempt in range(5):
            decider = StoreDecider(store, f"node-{index}")
            plan = decider.begin(PHONE)
            if plan.refusal:
                continue  # the server ends such a session before it asks for the string
            decider.authenticate(plan, AuthOffer(PHONE.encode(), f"{index}{attempt}000000".encode()))

    _concurrently(nodes, guess)
    phone = phone_row(nodes[0], PHONE)
    assert len(evaluated) == 3 and phone["auth_failures"] == 3 and phone["locked"] == 1


def test_a_phone_has_one_installed_lsc_whatever_hosts_install_at_once(nodes):
    add_phone(nodes[0], PHONE, operation="install_upgrade")
    key = ec.generate_private_key(ec.SECP256R1())

    def install(index, store):
        for _attempt in range(5):
            decider = StoreDecider(store, f"node-{index}")
            plan = decider.begin(PHONE)
            issued = lsc.issue(store, PHONE, key.public_key(), create_phone=False)
            decider.stored(plan, Issued(issued.id, b""), True)
            decider.ended(plan, Outcome(outcome="succeeded"))  # the session's end records the installation

    _concurrently(nodes, install)
    statuses = sorted(row["status"] for row in certificate_rows(nodes[0], PHONE))
    assert statuses.count("installed") == 1 and len(statuses) == NODES * 5
    assert set(statuses) <= {"installed", "revoked", "stale"}


def test_the_service_event_loop_waits_a_short_bound_for_the_writers_lock(postgres_dsn, state_dir):
    """The CAPF service's event loop (a group-commit store's deferring thread) waits for the writers'
    advisory lock that another host's long change holds at most ``LOOP_WRITER_LOCK_WAIT_SECONDS``, then
    fails with ``StoreBusy`` and nothing written; another thread of the same store waits as before, and
    the loop writes again once the change is done."""
    with open_store(postgres_dsn, state_dir=state_dir, actor="capf-server", group_commit=True) as service:
        service.defer_durability()
        with held_by_another_writer(postgres_dsn, state_dir, "SEP0000000000E1"):
            started = time.monotonic()
            with pytest.raises(StoreBusy, match="another writer .* still holds; nothing was written"):
                with service.transaction() as tx:
                    create_phone(tx, "SEP0000000000E2")
            waited = time.monotonic() - started
            assert LOOP_WRITER_LOCK_WAIT_SECONDS * 0.8 <= waited < LOOP_WRITER_LOCK_WAIT_SECONDS + 2, waited
        with service.transaction() as tx:
            create_phone(tx, "SEP0000000000E3")
        service.defer_durability(False)
        assert phone_row(service, "SEP0000000000E2") is None
        assert phone_row(service, "SEP0000000000E1") is not None and phone_row(service, "SEP0000000000E3") is not None


def test_a_store_thread_of_the_service_waits_for_a_long_writer_without_holding_the_connection(postgres_dsn, state_dir):
    """A store thread of the CAPF service (an online CA's session step, the scheduler) shares the store's one
    connection with the event loop: while another host's long change holds the writers' lock, the thread's
    write waits for it without holding the connection, so that the loop reads, asks the commit counter and
    looks at the lock at once meanwhile; the thread writes once the change is done."""
    with open_store(postgres_dsn, state_dir=state_dir, actor="capf-server", group_commit=True) as service:
        service.defer_durability()  # this thread is the event loop
        backend, outcome = service.backend, {}

        def store_thread():
            try:
                with service.transaction(durable=False) as tx:
                    create_phone(tx, "SEP0000000000E5")
            except BaseException as exc:  # pylint: disable=broad-exception-caught  # reported below
                outcome["error"] = exc

        thread = threading.Thread(target=store_thread)
        try:
            with held_by_another_writer(postgres_dsn, state_dir, "SEP0000000000E4", held_for=5):
                thread.start()
                time.sleep(0.5)  # the thread waits for the lock by now
                for _look in range(5):
                    started = time.monotonic()
                    service.data_version()
                    waited = time.monotonic() - started
                    assert waited < 0.2, f"the loop waited {waited:.1f} s for the store thread"
                    assert phone_row(service, "SEP0000000000E5") is None and not backend.writer_lock_free()
                    time.sleep(0.05)
                assert thread.is_alive()
            thread.join(10)
        finally:
            service.defer_durability(False)
        assert "error" not in outcome, outcome
        assert phone_row(service, "SEP0000000000E4") is not None and phone_row(service, "SEP0000000000E5") is not None


@pytest.mark.parametrize("bound", [0.3, 1.2])
@pytest.mark.parametrize("beside_the_loop", [True, False])
def test_a_thread_given_a_bound_waits_for_a_long_writer_that_long_at_most(postgres_dsn, state_dir, bound, beside_the_loop):
    """Invariant: a write of a thread given a bound (``writer_lock_wait_until``: a session's step in a store
    thread of the CAPF service, its step timeout) waits for the writers' lock that another host's long change
    holds ``bound`` seconds at most, then fails with ``StoreBusy``, nothing of it written: beside the service's
    event loop on its connection (polling, the loop going on meanwhile) and on a connection of its own alike.
    The bound ends with the block: the same thread then waits for the change to be done, as an operator's
    command does, and writes."""
    with open_store(postgres_dsn, state_dir=state_dir, actor="capf-server", group_commit=beside_the_loop) as service:
        if beside_the_loop:
            service.defer_durability()  # this thread is the event loop
        outcome = {}

        def store_thread():
            try:
                started = time.monotonic()
                with pytest.raises(StoreBusy, match="still holds; nothing was written"):
                    with writer_lock_wait_until(time.monotonic() + bound), service.transaction() as tx:
                        create_phone(tx, "SEP0000000000E7")
                outcome["waited"] = time.monotonic() - started
                with service.transaction() as tx:  # no bound: waits for the change to be done
                    create_phone(tx, "SEP0000000000E8")
            except BaseException as exc:  # pylint: disable=broad-exception-caught  # reported below
                outcome["error"] = exc

        thread = threading.Thread(target=store_thread)
        try:
            with held_by_another_writer(postgres_dsn, state_dir, "SEP0000000000E6", held_for=bound + 3) as release:
                thread.start()
                ends = time.monotonic() + bound + 1.5
                while "waited" not in outcome and time.monotonic() < ends:
                    if beside_the_loop:  # the loop is served meanwhile
                        started = time.monotonic()
                        service.data_version()
                        assert time.monotonic() - started < 0.2
                    time.sleep(0.05)
                assert "waited" in outcome, f"the thread waited for the change longer than {bound} s"
                assert thread.is_alive(), outcome  # its later write, given no bound, waits
                assert phone_row(service, "SEP0000000000E7") is None
                release.set()
            thread.join(10)
        finally:
            if beside_the_loop:
                service.defer_durability(False)
        assert "error" not in outcome, outcome
        assert bound * 0.8 <= outcome["waited"] < bound + 0.5, outcome
        assert phone_row(service, "SEP0000000000E7") is None
        assert phone_row(service, "SEP0000000000E8") is not None


def _lock_taken_by(connection) -> bool:
    """Whether ``connection`` (another session of the database) can take the writers' lock now; it lets it go."""
    taken = connection.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK_KEY,)).fetchone()[0]
    if taken:
        connection.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
    return bool(taken)


def test_writer_lock_free_tells_whether_another_session_holds_the_writers_lock_without_waiting_or_keeping_it(
        postgres_dsn, state_dir, monkeypatch):
    """The service asks ``writer_lock_free`` before each step of a session (and awaits the lock while it is
    held): one statement that never waits and never keeps the lock; True while another session has held it
    only a short while (a session's step on another node, waited for in the transaction), False once it has
    held it longer (a long apply on another host) and while another thread of the process has the connection (it may be
    waiting for the lock there), True inside a transaction of the asking thread, whose transaction it
    leaves as it was."""
    with open_store(postgres_dsn, state_dir=state_dir, actor="capf-server", group_commit=True) as service, \
            psycopg.connect(postgres_dsn, autocommit=True) as other:
        backend = service.backend
        assert backend.writer_lock_free() and _lock_taken_by(other)
        with held_by_another_writer(postgres_dsn, state_dir, "SEP0000000000F1"):
            # Any writer but a service's session step may hold the lock long, however recently it took it.
            with monkeypatch.context() as patched:
                patched.setitem(postgresql._WRITER_LOCK_FREE_PARAMS, "long", 30)  # pylint: disable=protected-access
                assert not backend.writer_lock_free()
            started = time.monotonic()
            assert not backend.writer_lock_free()
            assert time.monotonic() - started < 0.2
        assert backend.writer_lock_free() and _lock_taken_by(other)
        with service.transaction() as tx:  # a write transaction of this thread holds the lock itself
            assert backend.writer_lock_free()
            create_phone(tx, "SEP0000000000F2")
        with service.read() as tx:  # asked in a read transaction: the lock is not kept until it ends
            assert backend.writer_lock_free() and _lock_taken_by(other)
            assert len(tx.query("SELECT name FROM phones")) == 2
        # Another node's session step holds the lock: a short writer, waited for in the transaction rather
        # than polled for (bounds widened and narrowed here, so that the machine's speed does not decide).
        with open_store(postgres_dsn, state_dir=state_dir, actor="capf-server", group_commit=True) as node, \
                held_in_a_thread(node, "SEP0000000000F4"), monkeypatch.context() as patched:
            patched.setitem(postgresql._WRITER_LOCK_FREE_PARAMS, "long", 30)  # pylint: disable=protected-access
            assert backend.writer_lock_free(), "another node's step that has just begun counts as short"
            patched.setitem(postgresql._WRITER_LOCK_FREE_PARAMS, "long", 0)  # pylint: disable=protected-access
            assert not backend.writer_lock_free(), "another node's writer holding it longer counts as long"
        # Another thread of the process has the connection: asked again later, not waited for.
        with held_in_a_thread(service, "SEP0000000000F3"):
            started = time.monotonic()
            assert not backend.writer_lock_free()
            assert time.monotonic() - started < 0.2
        assert backend.writer_lock_free() and _lock_taken_by(other)
        assert phone_row(service, "SEP0000000000F3") is not None

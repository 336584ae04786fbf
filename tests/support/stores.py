"""Stores as earlier releases left them: at a given schema version, with content in and beside them."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Sequence

from _opencapf import trust
from _opencapf.ca import authority
from _opencapf.errors import StoreError
from _opencapf.store import Store, migrate, open_store, postgresql
from _opencapf.store.sqlite import SqliteBackend

from . import certfactory
from .protocol import add_phone
from .store_phones import create_phone

PHONE = "SEP001122334455"


def populated_store(directory: str, version: int) -> str:
    """A store at schema ``version`` with a CAPF certificate (keys/), a phone with an authentication
    string (secret.key) and a pending operation, an offline CA root, closed as a real run leaves it."""
    os.mkdir(directory, 0o700)
    path = os.path.join(directory, "capf.db")
    backend = SqliteBackend(path)
    migrate(backend, target=version)
    with Store(backend, directory, "test") as store:
        assert store.schema_version() == version
        authority.ensure(store)
        add_phone(store, PHONE, operation="install_upgrade", auth_mode="auth_string", auth_string="12345678")
        trust.converge(store, content=certfactory.pem(certfactory.make("Offline Root CA")[0]), trust_store="capf-trust")
    return path


def backend_cases(values: Sequence[Any], on_postgresql: Sequence[Any]) -> list[tuple]:
    """Cases for ``@pytest.mark.parametrize("backend, <names>", ..., indirect=["backend"])``: every value
    (a tuple for several names) with an SQLite store, and the representative ones of ``on_postgresql``
    with a PostgreSQL store too."""
    assert set(on_postgresql) <= set(values), set(on_postgresql) - set(values)

    def case(backend, value):
        return (backend, *value) if isinstance(value, tuple) else (backend, value)

    return [case("sqlite", value) for value in values] + [case("postgresql", value) for value in on_postgresql]


def store_exists(location: str, state_dir: str | None = None) -> bool:
    """Whether a store is at ``location``: an SQLite file, or a PostgreSQL database with the CAPF schema."""
    if not postgresql.is_location(location):
        return os.path.exists(location)
    try:
        open_store(location, state_dir=state_dir, read_only=True, create=False).close()
    except StoreError:
        return False
    return True


def query(location: str, sql: str, params: Sequence[Any] = (), state_dir: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``sql`` in the store at ``location`` (either backend), read without writing."""
    with open_store(location, state_dir=state_dir, read_only=True, create=False) as store, store.read() as tx:
        return tx.query(sql, params)


def execute(location: str, sql: str, params: Sequence[Any] = ()) -> None:
    """Run one statement in the store at ``location`` (either backend), as a test's fault or edit."""
    with open_store(location, actor="test") as store, store.transaction() as tx:
        tx.execute(sql, params)


def dump(store: Store) -> dict[str, list[str]]:
    """Every row of every table of ``store`` (either backend), read in one read transaction of the store:
    its whole content, to compare before and after a change. Rows are sorted, each as the text of its
    sorted columns (a PostgreSQL sequence a rolled-back insert advanced is not a table's content)."""
    with store.read() as tx:
        if postgresql.is_location(store.location):
            tables = tx.query("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()")
        else:
            tables = tx.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert tables, "a store without tables"
        return {name: sorted(repr(sorted(row.items())) for row in tx.query(f'SELECT * FROM "{name}"'))
                for name in sorted(row["name"] for row in tables)}


@contextlib.contextmanager
def vm_steps(store: Store, every: int = 100) -> Iterator[list[int]]:
    """Count SQLite's virtual machine steps of what runs inside, in steps of ``every`` (the progress
    handler's granularity): the count is ``counted[0]`` of the list yielded. A work bound that does not
    depend on the machine's speed (SQLite stores only)."""
    connection = store.backend._connection  # pylint: disable=protected-access
    counted = [0]

    def count():
        counted[0] += every
        return 0

    connection.set_progress_handler(count, every)
    try:
        yield counted
    finally:
        connection.set_progress_handler(None, 0)


@contextlib.contextmanager
def steps_per_transaction(store: Store, every: int = 100) -> Iterator[list[list]]:
    """SQLite's virtual machine steps (``vm_steps``) of each transaction that runs inside, told apart by
    the statements that begin and end it: the list yielded gets ``[its BEGIN statement, steps, statements]``
    for each, in order. A bound of the work one transaction does, and holds a lock for (SQLite stores only)."""
    connection = store.backend._connection  # pylint: disable=protected-access
    transactions: list[list] = []
    with vm_steps(store, every) as counted:
        started = [0]

        def trace(statement: str) -> None:
            if statement.startswith("BEGIN"):
                started[0] = counted[0]
                transactions.append([statement, 0, 0])
            elif transactions:
                transactions[-1][1] = counted[0] - started[0]
                transactions[-1][2] += 1

        connection.set_trace_callback(trace)
        try:
            yield transactions
        finally:
            connection.set_trace_callback(None)


def held_by_another_writer(location: str, state_dir: str | None, phone_name: str,
                           held_for: float = 60) -> contextlib.AbstractContextManager[threading.Event]:
    """Another writer of the store (a long ``opencapf apply``, another host's change), in a thread of its
    own: it opens the store, creates the phone ``phone_name`` in a change and holds that change, with the
    store's write lock, until the event this yields is set, the block ends or ``held_for`` seconds pass;
    then it commits. The block begins once the change holds the lock."""
    return _held(lambda: open_store(location, state_dir=state_dir, actor="holder"), phone_name, held_for)


def held_in_a_thread(store: Store, phone_name: str, held_for: float = 60) -> contextlib.AbstractContextManager[threading.Event]:
    """``held_by_another_writer`` with ``store`` (open) as the writer, in a thread of its own: another
    thread of a process that has the store's connection, or another node's store."""
    return _held(lambda: contextlib.nullcontext(store), phone_name, held_for)


@contextlib.contextmanager
def _held(opened, phone_name: str, held_for: float) -> Iterator[threading.Event]:
    holding, release = threading.Event(), threading.Event()

    def hold():
        with opened() as holder, holder.atomic() as tx:
            create_phone(tx, phone_name)
            holding.set()
            release.wait(held_for)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30), "the other writer began its change"
        yield release
    finally:
        release.set()
        thread.join(60)

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The small interface between the store and a database.

Callers write portable SQL with ``?`` placeholders and receive rows as dicts; a backend only
knows how to connect, run a transaction and spell its dialect's few differences. A PostgreSQL
backend implements the same two classes.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

# The longest a write transaction of the CAPF service's event loop (the deferring thread) waits for the
# lock every writer takes before it fails with ``StoreBusy``: every session and every connection of the
# process waits while it does. The service awaits a held lock before a step instead (``writer_lock_free``),
# and a step that meets it all the same before it wrote anything awaits it after (``errors.StepUndone``).
LOOP_WRITER_LOCK_WAIT_SECONDS = 0.25

# Per thread, ``until``: the moment (``time.monotonic``) past which its write transactions wait no longer for
# the writers' lock (``writer_lock_wait_until``).
_given = threading.local()


@contextlib.contextmanager
def writer_lock_wait_until(deadline: float) -> Iterator[None]:
    """Within it, a write transaction of the calling thread that meets the lock every writer takes held by
    another writer (a long ``opencapf apply``) waits for it until ``deadline`` (``time.monotonic``) at most,
    on any backend, then fails with ``StoreBusy``, nothing of it written: the bound the CAPF service gives a
    session's step that runs in its store threads (an online CA's), its step timeout. A bound given inside
    another keeps the sooner one. Elsewhere a writer waits as its backend says (SQLite: ``writer_lock_wait``
    seconds; PostgreSQL: until the lock is free)."""
    before = getattr(_given, "until", None)
    _given.until = deadline if before is None else min(before, deadline)
    try:
        yield
    finally:
        _given.until = before


def writer_lock_wait_left(default: float | None) -> float | None:
    """The seconds a write transaction of the calling thread may wait for the writers' lock from now: what is
    left of the bound it was given (``writer_lock_wait_until``; 0 once passed), if sooner than ``default`` (None:
    no bound)."""
    until = getattr(_given, "until", None)
    if until is None:
        return default
    left = max(0.0, until - time.monotonic())
    return left if default is None else min(default, left)


class Transaction(abc.ABC):
    """One open transaction. Everything done through it commits together or not at all."""

    #: Audit events collected to be appended with one statement (``audit.batched``); None: at once.
    audit_batch: list | None = None

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""

    @abc.abstractmethod
    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT into a table with an ``id`` key; return the new id."""

    @abc.abstractmethod
    def insert_unless_conflict(self, sql: str, params: Sequence[Any] = ()) -> int | None:
        """Run an INSERT ... ON CONFLICT DO NOTHING into a table with an ``id`` key; return the new id,
        or None when the conflict left the table as it was."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return every row of a query as a dict."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        """Yield the rows of a query as tuples, in the order of its columns (for long listings:
        a backend may stream them instead of building every row first)."""
        for row in self.query(sql, params):
            yield tuple(row.values())

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        """Return the first row of a query, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else next(iter(row.values()))


class Backend(abc.ABC):
    """A connection to one database holding one CAPF store."""

    #: Text substituted for ``{id}`` and ``{blob}`` in migrations.
    dialect: dict[str, str] = {}
    location: str = ""
    #: Durable commits of concurrent threads share their fsyncs (see ``Store.defer_durability``).
    group_commit: bool = False
    #: Processes on several hosts, each with its own clock, write the store (see ``Store.clock_skew``).
    shared_by_hosts: bool = False
    deferring_thread: int | None = None
    #: While set, the store cannot be reached (a database down, its host silent): the deferring thread's store
    #: work fails with it at once, touching nothing, until another thread's has reached the store again.
    unreachable: Exception | None = None
    durable_mark: int = 0

    #: Per thread, ``count``: the write transactions it has committed through this connection (``commits``).
    _commits_of_thread: threading.local

    @abc.abstractmethod
    def data_version(self) -> int:
        """Changes whenever another connection has committed since the last call."""

    def commits(self) -> int:
        """How many write transactions the calling thread has committed through this connection: while it
        stays the same, nothing the thread did since is in the store."""
        return getattr(self._commits_of_thread, "count", 0)

    def _committed(self) -> None:
        self._commits_of_thread.count = self.commits() + 1

    def sync(self, mine: int) -> None:  # pylint: disable=unused-argument
        """Return once commit number ``mine`` is on disk; a backend whose commits are durable when
        they return has nothing to do."""
        return None

    @abc.abstractmethod
    def transaction(self, write: bool = True, durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        """Open a transaction; ``write`` transactions take the write lock at once. ``durable=False``
        lets the commit skip waiting for the disk: a power failure (never a crash of the process)
        may lose it, and only together with every commit after it up to the next durable one."""

    @abc.abstractmethod
    def rehearsal(self) -> contextlib.AbstractContextManager[Transaction]:
        """A write transaction that is always rolled back, on a read-only store too: what a change of
        several steps would do, each step seeing those before it, with nothing written to the store or
        beside it. SQLite: a private in-memory copy of the database (memory as large as the store, for
        as long as the rehearsal lasts; writers are not held up); PostgreSQL: a write transaction of the
        database itself, rolled back (the other writers wait for it, as for any writer)."""

    def writer_lock_free(self) -> bool:
        """Whether the lock every writer takes is free now (no other writer holds it), asked without
        waiting. The CAPF service asks before a step of a session on its event loop and awaits it while
        it is held, so that the step's writes do not wait for it there (SQLite: a try of the lock file;
        PostgreSQL: one round trip to the database). A backend that cannot ask says True: its writers
        of the event loop wait ``LOOP_WRITER_LOCK_WAIT_SECONDS`` at most in the transaction."""
        return True

    def atomic(self) -> contextlib.AbstractContextManager[Transaction]:
        """A durable write transaction that a change of several steps runs in, committed once at the
        end or rolled back entirely, holding the lock every writer takes from its first statement to
        its commit. PostgreSQL: a write transaction (the writers' advisory lock); SQLite overrides it."""
        return self.transaction(write=True, durable=True)

    def abort(self) -> None:
        """End the store work under way on this connection now, from any thread, and every later one (the
        process is stopping): a thread that waits for the database's answer (its host silent) fails at once
        with ``StoreUnreachable``, its transaction rolled back by the database, and no connection is made
        again. SQLite, whose work waits on no network, has nothing to end."""
        return None

    @abc.abstractmethod
    def try_lead(self, name: str) -> bool:
        """Take the lead of ``name`` (a duty one process of all those sharing the store does, such as
        the scheduler) unless another connection holds it; return whether this connection leads. The
        lead is kept until ``close()`` or the end of the process, whichever comes first, and is then
        free for another connection. SQLite: an exclusive lock on a file beside the store;
        PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``)."""

    @abc.abstractmethod
    def holds_lead(self, name: str) -> bool:
        """Whether this connection holds the lead of ``name`` now, without taking it: verified with the
        lock itself (PostgreSQL: its session still holds the advisory lock, a lost connection lost it)."""

    @abc.abstractmethod
    def append_only(self, table: str) -> list[str]:
        """Statements that make ``table`` refuse UPDATE and DELETE."""

    @abc.abstractmethod
    def deletable(self, table: str, column: str, prefix: str) -> list[str]:
        """Statements that make ``table``, made append-only by ``append_only``, accept the DELETE of the
        rows whose ``column`` starts with ``prefix`` (an ASCII text of no wildcard), and of no other row;
        UPDATE is still refused."""

    @abc.abstractmethod
    def incarnations(self, table: str) -> list[str]:
        """Statements that tell a row of ``table`` from a row that had its id before: a new row's
        ``incarnation`` column (default 0) differs from the one of every row deleted before it, where
        the backend may give a deleted row's id again."""

    @abc.abstractmethod
    def table_exists(self, tx: Transaction, table: str) -> bool:
        """Whether ``table`` exists (used before the first migration)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @contextlib.contextmanager
    def read(self) -> Iterator[Transaction]:
        with self.transaction(write=False) as tx:
            yield tx

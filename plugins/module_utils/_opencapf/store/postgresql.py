# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A store in a PostgreSQL database, shared by several CAPF hosts (psycopg 3).

The location is a libpq connection string: ``postgresql://user@host:port/dbname?sslmode=verify-full``
or ``host=... dbname=...``, ``postgres://`` alike. A password never appears in it: libpq reads it
from the password file (``PGPASSFILE``, ``~/.pgpass``, or ``passfile=`` in the string), from
``PGPASSWORD``, or from a connection service file (``service=``, ``PGSERVICE``); a connection
string that carries one is refused, and error messages never repeat it.

One connection per ``Store``, as with SQLite. Transactions keep the SQLite backend's semantics:

* A write transaction runs at READ COMMITTED and first takes a transaction-level advisory lock
  (``pg_advisory_xact_lock``) that every writer of the database takes: writers run one at a time
  across every host, exactly as SQLite's ``BEGIN IMMEDIATE`` makes them run one at a time on one
  host. Each statement after the lock sees every commit before it, so a read-then-write in one
  transaction (serial allocation, lock-out counting, the one current LSC of a phone, a session's
  operation state) is atomic without retry loops. The price is write throughput: one writer at a
  time for the whole store. SERIALIZABLE with retries would let unrelated writes overlap, but
  every caller would have to be safe to re-run, and a CAPF session's writes are short.
* A read transaction runs at REPEATABLE READ, READ ONLY: one consistent snapshot, no lock.
* ``durable=False`` commits with ``synchronous_commit = off``: a crash of the database server may
  lose it, in order with the later non-durable ones, never a durable commit. Every other commit is
  on disk when it returns, so ``sync`` has nothing to wait for and deferred durability (the CAPF
  service's event loop, ``Store.defer_durability``) defers nothing: ``durable_mark`` stays 0.
* The connection is shared by the threads of a process (the service's event loop and its store
  threads): one lock makes them take turns, a transaction at a time. A store thread of the service never
  waits for the writers' lock on the connection while another writer may hold it long: it polls for it,
  letting the connection go between the looks (``_begin_beside_loop``), so that the event loop's sessions
  and connections go on meanwhile, and no longer than the bound it was given (``backend.writer_lock_wait_until``:
  a session's step, its step timeout), then ``StoreBusy``. Other writers (the CLI, the modules, the scheduler's
  connection) wait until the lock is free.
* ``abort`` (a stopping service whose store work waits for a host that does not answer) shuts the connection's
  socket down from any thread: the waiting round trip fails at once, and no connection is made again.
* ``writer_lock_free`` (asked by the CAPF service before each step of a session on its event loop, which
  awaits the lock while another session holds it, as on SQLite) runs ``pg_try_advisory_xact_lock`` as a
  statement of its own: one round trip, no wait, and the lock let go at the statement's end. A lock that
  another service's session step holds (a connection named ``SERVICE_APPLICATION_NAME``, for no longer
  than ``LONG_WRITER_SECONDS``) counts as free: the step's write waits for it in its transaction. A write
  of the event loop that meets the lock waits ``LOOP_WRITER_LOCK_WAIT_SECONDS`` at most, then fails with
  ``StoreBusy`` (a session's step that had written nothing yet is undone and awaits the lock again:
  ``errors.StepUndone``).
* ``try_lead`` takes a session-level advisory lock keyed by the duty's name: the database releases
  it when the connection closes or its process dies, or when the connection is lost. ``holds_lead``
  asks the database whether this connection's session still holds it; a connection made again after a
  loss holds no lead until ``try_lead`` takes it again.
* ``data_version`` reads the row of ``commit_counter``, which every write transaction that changed
  something raises under the write lock; this connection's own raises are not counted as changes.
* A host that stops answering (a network cut: nothing refused, packets dropped) is found within seconds,
  not after the kernel's retransmissions (many minutes): libpq's ``tcp_user_timeout`` and TCP keepalives
  (``UNANSWERED_SECONDS``). The CAPF service's event loop (the deferring thread), whose every wait holds up
  every connection of the process, waits ``LOOP_ROUND_TRIP_SECONDS`` at most for a round trip (then the
  connection is closed), for a connection to be made again and for the connection's lock: work of it that
  finds the store unreachable so fails with ``StoreUnreachable``, and so does all of its work after
  (``unreachable``: at once, touching nothing) until another thread has reached the store again (the
  service tries in its thread pool). The loop's wait for a host that does not answer is one per outage.

``read_only``: every transaction is READ ONLY and rolled back. A database at an older schema
version is read through the pending migrations applied inside that transaction (PostgreSQL DDL is
transactional), so the rollback leaves it exactly as it was.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import DependencyError, StoreBusy, StoreError, StoreUnreachable
from .backend import LOOP_WRITER_LOCK_WAIT_SECONDS, Backend, Transaction, writer_lock_wait_left
from .sqlite import LEAD_NAME, WRITER_LOCK_POLL_SECONDS

try:
    import psycopg
    from psycopg import conninfo as _conninfo
    from psycopg.rows import dict_row
    PSYCOPG_IMPORT_ERROR = None
except ImportError as _exc:  # reported when a PostgreSQL store is opened
    psycopg = _conninfo = dict_row = None
    PSYCOPG_IMPORT_ERROR = _exc

SCHEMES = ("postgresql://", "postgres://")
# The key of the advisory lock every write transaction takes ("opencapf" in ASCII).
WRITE_LOCK_KEY = int.from_bytes(b"opencapf", "big")
# The connections of the CAPF service's sessions (a store opened with ``group_commit``) name themselves so
# unless the location names the connection otherwise (``application_name``).
SERVICE_APPLICATION_NAME = "opencapf-service"
# A session's step of a CAPF service (of another node, or another process of this one) holds the writers'
# lock a few milliseconds: the step of a session that meets it waits for it in its transaction
# (``LOOP_WRITER_LOCK_WAIT_SECONDS`` at most) rather than poll for it before (``writer_lock_free``). Any
# other writer (an ``opencapf apply``, a bulk change, a scheduler's duty), or a service's that has held it
# longer than ``LONG_WRITER_SECONDS``, may hold it long: a step awaits it before it writes.
LONG_WRITER_SECONDS = 0.02
# Whether a session's step may write now (``writer_lock_free``): the lock taken and let go again at once,
# else whether the session that holds it is a service's that began its transaction (which takes the lock
# first) less than ``LONG_WRITER_SECONDS`` ago and no other writer queues for it (a queue of several
# nodes' steps under load may outlast the transaction's wait: the step awaits its end). A holder whose name or transaction start this role may not
# see (another role's, without pg_read_all_stats) counts as long. Advisory locks on a bigint key are listed
# in ``pg_locks`` with its high and low 32 bits as classid and objid, objsubid 1.
_WRITER_LOCK_FREE = (
    "SELECT CASE WHEN pg_try_advisory_xact_lock(%(key)s) THEN true ELSE NOT EXISTS ("
    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
    "AND l.classid::bigint = %(high)s AND l.objid::bigint = %(low)s "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND NOT (l.granted AND COALESCE(a.application_name = %(service)s "
    "AND a.xact_start >= clock_timestamp() - %(long)s * interval '1 second', false))) END")
_WRITER_LOCK_FREE_PARAMS = {"key": WRITE_LOCK_KEY, "high": WRITE_LOCK_KEY >> 32, "low": WRITE_LOCK_KEY & 0xFFFFFFFF,
                            "service": SERVICE_APPLICATION_NAME, "long": LONG_WRITER_SECONDS}
CONNECT_TIMEOUT_S = 10
# A connection whose host leaves what was sent unacknowledged this long is lost (libpq's ``tcp_user_timeout``),
# and an idle connection's host is asked by TCP keepalives after that long of silence (then every 2 s, 3 times):
# a network cut fails the connection within seconds instead of the kernel's retransmissions (many minutes). A
# location that sets any of these parameters itself keeps its own value.
UNANSWERED_SECONDS = 10
_UNANSWERED_PARAMS = {"tcp_user_timeout": str(UNANSWERED_SECONDS * 1000), "keepalives": "1",
                      "keepalives_idle": str(UNANSWERED_SECONDS), "keepalives_interval": "2", "keepalives_count": "3"}
# The longest the CAPF service's event loop (the deferring thread) waits for one round trip to the database
# (a session's statements take milliseconds; the loop's write waits ``LOOP_WRITER_LOCK_WAIT_SECONDS`` for the
# writers' lock) or for the connection's lock another thread holds: every connection of the process waits
# with it. A round trip that takes longer closes the connection, whose answer may still come. Making the connection
# again on the loop waits as long (libpq's least ``connect_timeout``).
LOOP_ROUND_TRIP_SECONDS = 2
_LITERAL = re.compile(r"('(?:[^']|'')*')")


def is_location(location: str) -> bool:
    """Whether a store location names a PostgreSQL database rather than an SQLite file."""
    return location.startswith(SCHEMES)


def check_dsn(location: str) -> dict[str, str]:
    """The parameters of a connection string, refused (without repeating it) when it carries a password."""
    if PSYCOPG_IMPORT_ERROR is not None:
        raise DependencyError("a PostgreSQL store needs the Python library psycopg 3 (pip install 'psycopg[binary]')")
    try:
        params = _conninfo.conninfo_to_dict(location)
    except psycopg.ProgrammingError:
        raise StoreError("store location is not a valid PostgreSQL connection string") from None
    if params.get("password"):
        raise StoreError("store location must not contain a password: give it in a password file (PGPASSFILE, "
                         "~/.pgpass or passfile=), in PGPASSWORD or in a connection service file (service=)")
    return params


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """Portable SQL with ``?`` placeholders in psycopg's spelling: ``%s`` (outside string literals, where
    ``?`` is a character), and every ``%`` doubled, in literals too: psycopg reads placeholders everywhere."""
    parts = _LITERAL.split(sql.replace("%", "%%"))
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("?", "%s")
    return "".join(parts)


def _params(params: Sequence[Any]) -> list:
    # SQLite stores a bool as the integer it is; the schema's flags are integer columns.
    return [int(value) if isinstance(value, bool) else value for value in params]


class _PostgresTransaction(Transaction):
    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._connection.cursor() as cursor:
            cursor.execute(translate(sql), _params(params))
            return cursor.rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(translate(sql), [_params(row) for row in rows])

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._connection.cursor() as cursor:
            cursor.execute(translate(sql) + " RETURNING id", _params(params))
            return cursor.fetchone()[0]

    def insert_unless_conflict(self, sql: str, params: Sequence[Any] = ()) -> int | None:
        with self._connection.cursor() as cursor:
            cursor.execute(translate(sql) + " RETURNING id", _params(params))
            row = cursor.fetchone()
            return None if row is None else row[0]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(translate(sql), _params(params))
            return cursor.fetchall() if cursor.description else []

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        cursor = self._connection.cursor()
        cursor.execute(translate(sql), _params(params))
        return iter(cursor)


if psycopg is not None:
    class _Connection(psycopg.Connection):
        """A connection whose round trips on ``loop_thread`` wait ``LOOP_ROUND_TRIP_SECONDS`` at most: then it
        is closed (it cannot serve another statement before the late answer) and the round trip fails."""

        loop_thread: int | None = None

        def wait(self, gen, *args, **kwargs):
            if self.loop_thread != threading.get_ident() or args[1:] or kwargs.get("timeout") is not None:
                return super().wait(gen, *args, **kwargs)
            try:
                return super().wait(gen, *args, **{**kwargs, "timeout": LOOP_ROUND_TRIP_SECONDS})
            except psycopg.errors._WaitTimeout:  # pylint: disable=protected-access  # psycopg 3.3's own, pinned
                self.close()
                raise psycopg.OperationalError(f"the database did not answer within {LOOP_ROUND_TRIP_SECONDS:g} s "
                                               "(the CAPF service's event loop waits no longer)") from None


class PostgresBackend(Backend):
    """A store in the PostgreSQL database named by a connection string (without a password)."""

    dialect = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "blob": "BYTEA", "int": "BIGINT"}
    shared_by_hosts = True

    def __init__(self, location: str, group_commit: bool = False, read_only: bool = False):
        params = check_dsn(location)
        self.location = location
        self.read_only = read_only
        self.group_commit = group_commit
        self._deferring_thread = None
        self.unreachable: StoreUnreachable | None = None
        self._aborted = False  # ``abort``: no connection is made again
        self.durable_mark = 0
        self._lock = threading.RLock()
        self._commits_of_thread = threading.local()
        self._known: int | None = None  # the commit counter as last seen, with no foreign commit unseen
        self._reported = 0
        self._leads: set[str] = set()
        self._counter = False  # whether the commit_counter table exists (migration 5)
        #: Read-only opens of an older schema: applies the pending migrations inside a transaction.
        self.prepare_read: Callable[[Transaction], None] | None = None
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
        params.setdefault("application_name", SERVICE_APPLICATION_NAME if group_commit else "opencapf")
        for name, value in _UNANSWERED_PARAMS.items():
            params.setdefault(name, value)
        self._conninfo = _conninfo.make_conninfo(**params)
        self._connection = self._connect()

    @property
    def deferring_thread(self) -> int | None:
        return self._deferring_thread

    @deferring_thread.setter
    def deferring_thread(self, ident: int | None) -> None:
        self._deferring_thread = self._connection.loop_thread = ident

    def _connect(self):
        if self._aborted:
            raise StoreUnreachable(f"store {self.location}: its work was ended (the process is stopping)")
        bounded = {"connect_timeout": str(LOOP_ROUND_TRIP_SECONDS)} if self._on_loop() else {}
        try:
            connection = _Connection.connect(self._conninfo, autocommit=True, **bounded)
        except psycopg.Error as exc:
            raise StoreUnreachable(f"cannot connect to store {self.location}: {_first_line(exc)}") from None
        connection.loop_thread = self._deferring_thread
        return connection

    def _on_loop(self) -> bool:
        return self._deferring_thread is not None and threading.get_ident() == self._deferring_thread

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The connection's lock, for work that reaches the store. The event loop's work fails at once while the
        store is ``unreachable``; it waits ``LOOP_ROUND_TRIP_SECONDS`` for the lock at most (another thread that
        holds it longer may be waiting for a host that does not answer). A failure of the loop's work to reach
        the store makes it ``unreachable``; another thread's work that reaches the store ends that."""
        if not self._on_loop():
            with self._lock:
                yield
            self.unreachable = None
            return
        if self.unreachable is not None:
            raise StoreUnreachable(str(self.unreachable))
        if not self._lock.acquire(timeout=LOOP_ROUND_TRIP_SECONDS):
            self.unreachable = StoreUnreachable(f"store {self.location}: another thread has used its connection for "
                                                f"over {LOOP_ROUND_TRIP_SECONDS:g} s (its host may not be answering)")
            raise self.unreachable
        try:
            yield
        except StoreUnreachable as exc:
            self.unreachable = exc
            raise
        finally:
            self._lock.release()

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        """The error of work that failed with ``exc``: ``StoreUnreachable`` when the connection went with it."""
        kind = StoreUnreachable if self._connection.closed else StoreError
        return kind(f"store {self.location}: {what}: {_first_line(exc)}")

    def _live(self):
        """The connection, made again when the last one was lost (the database restarted, a network
        cut): the transaction that met the loss failed; the next one runs on a new connection. The
        leads and the advisory locks went with the old connection; the commit counter is read anew.
        The event loop waits ``LOOP_ROUND_TRIP_SECONDS`` for it, not ``CONNECT_TIMEOUT_S``."""
        if self._connection.closed:  # broken too
            try:
                self._connection = self._connect()
            except StoreUnreachable as exc:
                self.unreachable = exc
                raise
            self._leads.clear()
            self._known = None
            self._counter = False
        return self._connection

    # -- transactions -----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, write: bool = True, durable: bool = True) -> Iterator[Transaction]:
        if write and self.read_only:
            raise StoreError(f"store {self.location} is open read-only; nothing may be written")
        with self._held():
            started = time.monotonic()
            try:
                if write and self._shares_with_loop():
                    connection = self._begin_beside_loop(durable, started)
                else:
                    connection = self._on_live(lambda connection: self._begin(connection, write, durable))
            except psycopg.errors.LockNotAvailable:
                self._rollback()
                raise self._busy(time.monotonic() - started) from None
            except psycopg.Error as exc:
                self._rollback()
                raise self._failed("cannot begin a transaction", exc) from None
            counted = None
            try:
                yield _PostgresTransaction(connection)
                if write:
                    counted = self._count_commit()
            except psycopg.OperationalError as exc:
                self._rollback()
                if not connection.closed:
                    raise
                raise StoreUnreachable(f"store {self.location}: the connection was lost during a transaction: "
                                       f"{_first_line(exc)}") from None
            except BaseException:
                self._rollback()
                raise
            if not write or self.read_only:
                self._rollback()
                return
            try:
                connection.execute("COMMIT")
            except psycopg.Error as exc:
                self._rollback()
                raise self._failed("commit failed", exc) from None
            self._committed()
            if counted is not None and self._known is not None and counted == self._known + 1:
                self._known = counted  # this connection's own commit, with no other in between
            # A durable commit is on disk now, deferring thread or not: ``durable_mark`` (commits still
            # to be synced) never rises, so the service's event loop never waits for a sync.

    def _begin(self, connection, write: bool, durable: bool):
        if write:
            connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            self._lock_writers(connection)
            self._write_settings(connection, durable)
        elif self.prepare_read is not None:
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            self.prepare_read(_PostgresTransaction(connection))
            connection.execute("SET TRANSACTION READ ONLY")
        else:
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return connection

    def _on_live(self, run):
        """``run(connection)`` on the live connection, before any transaction of it: when the connection
        turns out lost (the server ended it while it was idle: a restart, ``idle_session_timeout``, a
        network device's idle reset), nothing was begun on it, so ``run`` is tried once more on a new
        one (``_live``: the leads went with the old connection). A loss met part-way through a
        transaction fails that transaction; a server that cannot be reached fails this one."""
        connection = self._live()
        try:
            return run(connection)
        except psycopg.OperationalError:
            if not connection.broken:
                raise
        return run(self._live())

    @staticmethod
    def _write_settings(connection, durable: bool) -> None:
        if not durable:
            connection.execute("SET LOCAL synchronous_commit = off")

    def _shares_with_loop(self) -> bool:
        """Whether the calling thread shares the connection with the CAPF service's event loop (the
        deferring thread), whose every store call would wait while this thread waits on the connection."""
        return self._deferring_thread is not None and not self._on_loop()

    def _begin_beside_loop(self, durable: bool, started: float):
        """A write transaction of a thread that shares the connection with the service's event loop (a store
        thread of the service: an online CA's session, the enrolment service), begun once it holds the writers'
        lock, without waiting for it on the connection: a lock that another writer holds long (an apply) is
        polled for (``writer_lock_free``), ``_lock`` let go between the looks, so that the loop's steps and
        connections go on meanwhile. Only a look that finds it free, or held by another node's session step
        (``LONG_WRITER_SECONDS``), is followed by a wait in the transaction, ``LOOP_WRITER_LOCK_WAIT_SECONDS``
        at most (a long writer that took it since: looked for again). A thread given a bound
        (``backend.writer_lock_wait_until``: a session's step, its step timeout) waits no longer than it, from
        ``started`` (``time.monotonic``), then ``StoreBusy``, nothing begun. Called with ``_lock`` held."""
        bound = writer_lock_wait_left(None)

        def left() -> float | None:
            return None if bound is None else bound - (time.monotonic() - started)

        if self._on_live(lambda connection: self._begin_locked(connection, durable, wait=None)):
            return self._connection
        pause = 0.001
        while True:
            remaining = left()
            if remaining is not None and remaining <= 0:
                raise self._busy(time.monotonic() - started)
            self._lock.release()
            try:
                time.sleep(pause if remaining is None else min(pause, remaining))
            finally:
                self._lock.acquire()
            pause = min(2 * pause, WRITER_LOCK_POLL_SECONDS)
            if not self._on_live(lambda connection: connection.execute(_WRITER_LOCK_FREE,
                                                                       _WRITER_LOCK_FREE_PARAMS).fetchone()[0]):
                continue
            remaining = left()
            if remaining is not None and remaining <= 0:
                continue  # the bound has passed: said above
            wait = LOOP_WRITER_LOCK_WAIT_SECONDS if remaining is None else min(LOOP_WRITER_LOCK_WAIT_SECONDS, remaining)
            try:
                if self._on_live(lambda connection: self._begin_locked(connection, durable, wait=wait)):
                    return self._connection
            except psycopg.errors.LockNotAvailable:
                self._rollback()

    def _busy(self, waited: float) -> StoreBusy:
        return StoreBusy(f"store {self.location}: waited {round(waited, 2):g} s for its write lock, which another "
                         "writer (such as a long 'opencapf apply') still holds; nothing was written; try again once "
                         "it is done")

    def _begin_locked(self, connection, durable: bool, wait: float | None) -> bool:
        """BEGIN and the writers' lock: taken (True, the transaction open), or not free (False, rolled back) or,
        with ``wait`` seconds, not free within them (LockNotAvailable)."""
        connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        if wait is not None:
            connection.execute("SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)",
                               (_lock_timeout(wait), WRITE_LOCK_KEY))
        elif not connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,)).fetchone()[0]:
            connection.execute("ROLLBACK")
            return False
        self._write_settings(connection, durable)
        return True

    def _lock_writers(self, connection) -> None:
        """Take the lock every writer takes; the CAPF service's event loop (the deferring thread), whose
        wait holds up every session of the process, waits for it ``LOOP_WRITER_LOCK_WAIT_SECONDS`` at
        most (the transaction's ``lock_timeout``, set in the same round trip), then LockNotAvailable; another
        thread as long as the bound it was given (``backend.writer_lock_wait_until``), else until it is free
        (the CLI, the modules, the scheduler: an operator's command waits for an apply)."""
        wait = LOOP_WRITER_LOCK_WAIT_SECONDS if self._on_loop() else writer_lock_wait_left(None)
        if wait is not None:
            connection.execute("SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)",
                               (_lock_timeout(wait), WRITE_LOCK_KEY))
        else:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))

    def writer_lock_free(self) -> bool:
        """One round trip, never waiting: ``pg_try_advisory_xact_lock`` as a statement of its own, which
        (autocommit) is a transaction of its own that lets the lock go again at once when it took it. False
        while another session holds the lock that may hold it long (``_WRITER_LOCK_FREE``: an apply, a bulk
        change; a write now would wait for it), and while another thread of this process has the connection
        (a transaction of it, or its wait for the lock there, ``LOOP_WRITER_LOCK_WAIT_SECONDS`` at most: the
        caller asks again shortly rather than wait for that thread); True while only other services' session
        steps hold it, as those of other nodes do all the time (polling for each would multiply the database's
        transactions). In a transaction of this thread, True: a write transaction holds the lock already, and
        nothing is written in a read one (asking there would keep the lock until it ends)."""
        if self.read_only or (self.unreachable is not None and self._on_loop()):
            return True  # nothing may be written; or the step's own transaction fails at once
        if not self._lock.acquire(blocking=False):
            return False
        try:
            connection = self._connection
            if connection.closed or connection.broken:
                return True  # the step's own transaction connects again (or reports the database away)
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                return True
            try:
                return bool(connection.execute(_WRITER_LOCK_FREE, _WRITER_LOCK_FREE_PARAMS).fetchone()[0])
            except psycopg.Error as exc:
                if connection.closed and not connection.broken and self._on_loop():  # the host did not answer in time
                    self.unreachable = self._failed("cannot look at the writers' lock", exc)
                return True  # the connection is lost: the step's own transaction meets the loss and reports it
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def rehearsal(self) -> Iterator[Transaction]:
        # As a real run's writes: READ COMMITTED, after the lock every writer takes. Its row locks are
        # held until the rollback; without the writers' lock, a session's write that waits for one of
        # them while holding a row the rehearsal wants next would be a deadlock, which PostgreSQL ends
        # by failing one of the two (perhaps the session's). With it, writers wait for the rehearsal.
        with self._lock:
            try:
                connection = self._on_live(self._begin_rehearsal)
            except psycopg.Error as exc:
                self._rollback()
                raise StoreError(f"store {self.location}: cannot begin a transaction: {_first_line(exc)}") from None
            try:
                yield _PostgresTransaction(connection)
            finally:
                self._rollback()

    def _begin_rehearsal(self, connection):
        connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        if self.prepare_read is not None:
            self.prepare_read(_PostgresTransaction(connection))
        return connection

    def _rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection.execute("ROLLBACK")

    def _count_commit(self) -> int | None:
        """Raise the commit counter when this transaction changed something; the new value."""
        if not self._counter_exists():
            return None
        row = self._connection.execute(
            "UPDATE commit_counter SET version = version + 1 WHERE id = 1 "
            "AND pg_current_xact_id_if_assigned() IS NOT NULL RETURNING version").fetchone()
        return None if row is None else row[0]

    def _commit_counter(self, connection) -> int | None:
        if not self._counter_exists():
            return None
        return connection.execute("SELECT version FROM commit_counter WHERE id = 1").fetchone()[0]

    def _counter_exists(self) -> bool:
        if not self._counter:
            self._counter = bool(self._connection.execute(
                "SELECT to_regclass('commit_counter') IS NOT NULL").fetchone()[0])
        return self._counter

    def data_version(self) -> int:
        with self._held():
            try:
                version = self._on_live(self._commit_counter)
                if version is None:
                    return self._reported
            except psycopg.Error as exc:
                raise self._failed("cannot read the commit counter", exc) from None
            if version != self._known:
                self._known = version
                self._reported += 1
            return self._reported

    def try_lead(self, name: str) -> bool:
        if not LEAD_NAME.fullmatch(name):
            raise StoreError(f"lead name {name!r} must be lower-case letters, digits and underscores")
        with self._lock:
            if name in self._leads and self.holds_lead(name):  # verified: a lost connection took it along
                return True
            try:
                led = self._on_live(lambda connection: connection.execute(
                    "SELECT pg_try_advisory_lock(%s)", (lead_key(name),)).fetchone()[0])
            except psycopg.Error as exc:
                raise StoreError(f"cannot take the {name} lead of store {self.location}: {_first_line(exc)}") from None
            if led:
                self._leads.add(name)
            return bool(led)

    def holds_lead(self, name: str) -> bool:
        # A connection that was lost took its session's locks with it; a live session holds its
        # session-level lock until it ends. pg_locks shows a bigint key in two halves (classid, objid).
        with self._lock:
            if name not in self._leads or self._connection.closed or self._connection.broken:
                return False
            key = lead_key(name)
            try:
                held = bool(self._connection.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)",
                    ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()[0])
            except psycopg.Error:
                held = False  # the connection is lost (psycopg now knows it): the next transaction connects again
            if not held:
                self._leads.discard(name)
            return held

    # -- schema -----------------------------------------------------------------------------

    def append_only(self, table: str) -> list[str]:
        return [
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN RAISE EXCEPTION '{table} is append-only'; END$$",
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()",
        ]

    def deletable(self, table: str, column: str, prefix: str) -> list[str]:
        # One function serves the row triggers (UPDATE, DELETE) and the statement one (TRUNCATE, no OLD row).
        return [
            f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN IF TG_OP = 'DELETE' THEN IF substr(OLD.{column}, 1, {len(prefix)}) = '{prefix}' THEN "
            f"RETURN OLD; END IF; END IF; RAISE EXCEPTION '{table} is append-only'; END$$",
        ]

    def incarnations(self, table: str) -> list[str]:
        return []  # an identity column never gives an id twice: every row keeps incarnation 0

    def table_exists(self, tx: Transaction, table: str) -> bool:
        return bool(tx.scalar("SELECT to_regclass(?) IS NOT NULL AS present", (table,)))

    def abort(self) -> None:
        """The connection's socket is shut down, without ``_lock`` (another thread may hold it, waiting for the
        answer): that thread's wait ends at once (the connection lost), the database rolls its transaction back
        when it sees the end, and ``_connect`` makes no connection again."""
        self._aborted = True
        with contextlib.suppress(OSError, psycopg.Error):
            duplicate = socket.socket(fileno=os.dup(self._connection.pgconn.socket))
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
            finally:
                duplicate.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def lead_key(name: str) -> int:
    """The key of the session-level advisory lock of duty ``name``'s lead (``try_lead``)."""
    return int.from_bytes(hashlib.sha256(f"opencapf-lead:{name}".encode()).digest()[:8], "big", signed=True)


def _lock_timeout(seconds: float) -> str:
    """``lock_timeout`` of a wait of ``seconds`` (1 ms at least: 0 would mean no bound)."""
    return f"{max(1, round(seconds * 1000))}ms"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded default: one SQLite file in WAL mode."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from typing import Any, Iterable, Iterator, Sequence

from ..errors import StoreBusy, StoreError
from ..vocabulary import WRITER_LOCK_WAIT_SECONDS
from .backend import LOOP_WRITER_LOCK_WAIT_SECONDS, Backend, Transaction, writer_lock_wait_left

BUSY_TIMEOUT_MS = 30000
# Service connections (group commit) read the database through a memory map: several server
# processes share one file, and each commit of one makes the others drop their page cache.
MMAP_BYTES = 256 * 1024 * 1024
WRITER_LOCK_SUFFIX = "-writer.lock"
LEAD_LOCK_SUFFIX = "-lead-{name}.lock"  # one per duty (Backend.try_lead), e.g. capf.db-lead-scheduler.lock
LEAD_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A writer that polls for the writer lock sleeps at most this long between tries.
WRITER_LOCK_POLL_SECONDS = 0.05
# A service connection's write-ahead log is checkpointed by a thread of its own (``_Checkpointer``) after
# every this many transactions of the connection, and once a second while any log pages wait; a log of
# at least CHECKPOINT_RESTART_FRAMES frames is then moved in whole, under the writer lock if it is free
# within CHECKPOINT_LOCK_WAIT_SECONDS, so that it starts again from its beginning.
CHECKPOINT_EVERY_TRANSACTIONS = 128
CHECKPOINT_IDLE_SECONDS = 1.0
CHECKPOINT_RESTART_FRAMES = 4096
CHECKPOINT_LOCK_WAIT_SECONDS = 0.1

_log = logging.getLogger(__name__)

# The writer locks (device, inode of the lock file) each thread holds, through whichever connection.
_held_by_thread = threading.local()


def _held_writer_locks() -> set:
    held = getattr(_held_by_thread, "locks", None)
    if held is None:
        held = _held_by_thread.locks = set()
    return held


class _SqliteTransaction(Transaction):
    """The statements of one transaction. Those that are done when they return run on the backend's
    one cursor (a connection's ``execute`` makes a cursor per statement); ``rows``, which streams,
    on a cursor of its own."""

    def __init__(self, connection: sqlite3.Connection, cursor: sqlite3.Cursor):
        self._connection = connection
        self._run = cursor.execute

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).lastrowid

    def insert_unless_conflict(self, sql: str, params: Sequence[Any] = ()) -> int | None:
        cursor = self._run(sql, params)
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._run(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        return iter(self._connection.execute(sql, params))


class _Opened:
    """One transaction of a ``SqliteBackend`` as a context manager (``SqliteBackend.transaction``):
    the connection's lock and, for a write, the writer lock and ``BEGIN IMMEDIATE`` on entry; the
    commit (or, on an exception, the rollback) on exit, then the wait for the disk of a durable commit."""

    __slots__ = ("_backend", "_write", "_durable", "_queued")

    def __init__(self, backend: "SqliteBackend", write: bool, durable: bool):
        self._backend = backend
        self._write = write
        self._durable = durable
        self._queued = False

    def __enter__(self) -> Transaction:
        backend, write = self._backend, self._write
        cursor = backend._cursor  # pylint: disable=protected-access
        backend._lock.acquire()  # pylint: disable=protected-access
        try:
            if write and not backend.group_commit and self._durable != backend._durable:  # pylint: disable=protected-access
                # WAL: NORMAL appends the commit without an fsync; the next FULL commit's fsync of the
                # same log makes it durable together with itself.
                cursor.execute(f"PRAGMA synchronous = {'FULL' if self._durable else 'NORMAL'}")
                backend._durable = self._durable  # pylint: disable=protected-access
            if write:
                backend._take_writer_lock()  # pylint: disable=protected-access
                self._queued = True
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"store {backend.location}: cannot begin a transaction: {exc}") from None
        except BaseException:
            self._unlock()
            raise
        return _SqliteTransaction(backend._connection, cursor)  # pylint: disable=protected-access

    def _unlock(self) -> None:
        backend = self._backend
        try:
            if self._queued:
                self._queued = False
                backend._release_writer_lock()  # pylint: disable=protected-access
        finally:
            backend._lock.release()  # pylint: disable=protected-access

    def __exit__(self, exc_type, _exc_value, _traceback) -> bool:
        backend = self._backend
        cursor = backend._cursor  # pylint: disable=protected-access
        try:
            if exc_type is not None:
                cursor.execute("ROLLBACK")
                return False
            try:
                cursor.execute("COMMIT")
            except sqlite3.Error as error:
                cursor.execute("ROLLBACK")
                raise StoreError(f"store {backend.location}: commit failed: {error}") from None
            backend._written += 1  # pylint: disable=protected-access
            mine = backend._written  # pylint: disable=protected-access
            if backend._checkpointer is not None and not mine % CHECKPOINT_EVERY_TRANSACTIONS:  # pylint: disable=protected-access
                backend._checkpointer.wake()  # pylint: disable=protected-access
            if self._write:
                backend._committed()  # pylint: disable=protected-access
        finally:
            self._unlock()
        if self._write and self._durable and backend.group_commit:
            if threading.get_ident() == backend.deferring_thread:
                backend.durable_mark = mine
            else:
                backend.sync(mine)
        return False


class _Checkpointer:
    """Moves a service connection's write-ahead log into the database from a thread and a connection of
    its own. SQLite's automatic checkpoint runs in the thread that commits, once the log holds 1,000
    pages: for the service, its event loop, which would copy the log's pages into the database and sync
    the log and then the database file (two fsyncs) while every session waits, about every forty
    enrolments. The service's connection has it off (``wal_autocheckpoint = 0``); this thread checkpoints
    when woken after ``CHECKPOINT_EVERY_TRANSACTIONS`` transactions of that connection, and every
    ``CHECKPOINT_IDLE_SECONDS`` otherwise:

    * a PASSIVE checkpoint, which never waits for a writer nor makes one wait, copies what the log holds;
    * once the log holds ``CHECKPOINT_RESTART_FRAMES`` frames (16 MiB of 4 KiB pages), the frames committed
      during that copy are copied by a second one under the writer lock, when it is free within
      ``CHECKPOINT_LOCK_WAIT_SECONDS`` (else at the next turn): a log that is all in the database starts
      again from its beginning at the next write, where a stream of commits would always leave a few pages
      behind and grow it for good. Writers wait for that short copy as for any other writer (the event loop
      asynchronously).

    Under ``synchronous = NORMAL`` a checkpoint syncs the log before it copies a page, as the automatic one
    does. Another process's checkpoint at the same moment makes it try again at its next turn."""

    def __init__(self, location: str):
        self._location = location
        self._woken = threading.Event()
        self._stopping = False
        self.checkpoints = 0  # checkpoints that copied pages (for tests and the benchmark)
        self._thread = threading.Thread(target=self._run, name="opencapf-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stopping = True
        self._woken.set()
        self._thread.join()

    def _run(self) -> None:
        connection, writer_lock, failing = None, None, False
        try:
            while not self._stopping:
                self._woken.wait(CHECKPOINT_IDLE_SECONDS)
                self._woken.clear()
                try:
                    if connection is None:
                        connection = sqlite3.connect(self._location, isolation_level=None, check_same_thread=True)
                        connection.execute("PRAGMA synchronous = NORMAL")
                        writer_lock = os.open(self._location + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
                    if self._checkpoint(connection) >= CHECKPOINT_RESTART_FRAMES and self._lock_writers(writer_lock):
                        try:
                            self._checkpoint(connection)
                        finally:
                            fcntl.flock(writer_lock, fcntl.LOCK_UN)
                    if failing:
                        _log.warning("store %s: the write-ahead log is checkpointed again", self._location)
                        failing = False
                except (sqlite3.Error, OSError) as exc:
                    if not failing:  # said once per spell of failures: it is tried again at the next turn
                        _log.warning("store %s: cannot checkpoint the write-ahead log (tried again): %s",
                                     self._location, exc)
                        failing = True
        finally:
            if connection is not None:
                connection.close()
            if writer_lock is not None:
                os.close(writer_lock)

    def _checkpoint(self, connection: sqlite3.Connection) -> int:
        """A PASSIVE checkpoint (its statement stepped to its end: a statement left open would hold a read
        lock, which keeps the log from starting again); the frames the log holds (0 when it was busy)."""
        busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        if copied > 0:
            self.checkpoints += 1
        return 0 if busy else frames

    def _lock_writers(self, fd: int) -> bool:
        """Take the writer lock within ``CHECKPOINT_LOCK_WAIT_SECONDS`` (else leave it to the next turn)."""
        deadline = time.monotonic() + CHECKPOINT_LOCK_WAIT_SECONDS
        while not self._stopping:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.0005)
        return False


class SqliteBackend(Backend):
    """A store in one SQLite file, created 0600 in a 0700 directory when new. ``read_only``: reading
    writes no byte of the file or beside it (check mode, plans); write transactions are refused."""

    dialect = {"id": "INTEGER PRIMARY KEY", "blob": "BLOB", "int": "INTEGER"}

    def __init__(self, path: str, create: bool = True, group_commit: bool = False, read_only: bool = False,
                 writer_lock_wait: float = WRITER_LOCK_WAIT_SECONDS):
        self.location = os.path.abspath(path)
        self.read_only = read_only
        self.writer_lock_wait = writer_lock_wait
        self._lock = threading.RLock()
        self._commits_of_thread = threading.local()
        # Group commit: a durable commit returns only once the write-ahead log is on disk, as with
        # synchronous=FULL, but the fsync runs after the write lock is released and one fsync covers
        # every commit appended before it started, so sessions waiting for the disk share it.
        self.group_commit = group_commit
        self._sync_state = threading.Condition(threading.Lock())
        self._written = 0  # commits appended to the log by this connection
        self._synced = 0  # of which known to be on disk
        self._syncing = False
        # A thread whose durable commits return before their fsync (the CAPF service's event loop):
        # it calls ``sync(durable_mark)`` (in another thread) before it acknowledges anything.
        self.deferring_thread: int | None = None
        self.durable_mark = 0  # the last durable commit of the deferring thread
        exists = os.path.exists(self.location)
        if not exists and (read_only or not create):
            raise StoreError(f"store {self.location} does not exist; run 'init' first")
        if exists and not os.path.isfile(self.location):
            raise StoreError(f"store {self.location} is not a regular file")
        if exists and not os.access(self.location, os.R_OK if read_only else os.R_OK | os.W_OK):
            raise StoreError(f"store {self.location} is not readable{'' if read_only else ' and writable'} by this user")
        if not exists:
            directory = os.path.dirname(self.location)
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(self.location, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.location}: {exc.strerror}") from None
        try:
            self._connection = sqlite3.connect(
                self._read_only_uri() if read_only else self.location, timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None, check_same_thread=False, uri=read_only
            )
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if read_only:
                self._connection.execute("PRAGMA query_only = ON")
                mode = "wal"  # set by whoever wrote it; switching would be a write
            else:
                mode = self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                self._connection.execute(f"PRAGMA synchronous = {'NORMAL' if group_commit else 'FULL'}")
            self._durable = not group_commit
            self._connection.execute("PRAGMA foreign_keys = ON")
            if group_commit:
                self._connection.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
                if not read_only:  # its checkpoints are the checkpointer's (``_Checkpointer``)
                    self._connection.execute("PRAGMA wal_autocheckpoint = 0")
            # A file that is not a database fails on the first real read.
            self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            # The transactions' statements run on one cursor (``_SqliteTransaction``), each resetting
            # the one before: no statement outlives its transaction.
            self._cursor = self._connection.cursor()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store {self.location} is not a usable SQLite database: {exc}") from None
        if mode.lower() != "wal":
            raise StoreError(f"store {self.location} cannot use WAL journaling (got {mode})")
        # Every writer queues for the write lock on a lock file before SQLite's own lock, which it then
        # finds free: a writer that holds it for long (an atomic change, ``atomic``) makes the others
        # wait for it there, where SQLite's busy handler would fail them after the busy timeout. A writer
        # polls for it, up to ``writer_lock_wait`` seconds (the CLI, modules, the scheduler, the service's
        # store threads), without holding the connection's lock meanwhile; the service's event loop never
        # waits for it longer than ``LOOP_WRITER_LOCK_WAIT_SECONDS``: it asks whether the lock is free
        # before a session's step (``writer_lock_free``), awaiting it asynchronously while it is held.
        self._writer_lock: int | None = None
        self._writer_lock_id: tuple[int, int] | None = None
        self._writer_depth = 0  # write transactions of this connection that hold the writer lock
        self.waiting_writers = 0  # threads of this connection waiting for the writer lock now
        if not read_only:
            try:
                self._writer_lock = self._open_writer_lock()
            except StoreError:
                self._connection.close()
                raise
            status = os.fstat(self._writer_lock)
            self._writer_lock_id = (status.st_dev, status.st_ino)
        self._leads: dict[str, int] = {}  # duty name -> the descriptor holding its lock
        self._checkpointer = _Checkpointer(self.location) if group_commit and not read_only else None

    def _read_only_uri(self) -> str:
        # Without a write-ahead log beside it the file is the whole database: read it as immutable,
        # which creates no -wal/-shm files (a plain read-only open creates both and leaves them
        # behind). With a log (a live writer, or one that crashed), read through it and its index.
        immutable = "" if os.path.exists(self.location + "-wal") else "&immutable=1"
        return f"file:{urllib.parse.quote(self.location)}?mode=ro{immutable}"

    def copy_to(self, path: str) -> None:
        """Write a consistent copy of the database to the new file ``path``."""
        target = sqlite3.connect(path)
        try:
            with self._lock:
                self._connection.backup(target)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.location}: cannot copy it: {exc}") from None
        finally:
            target.close()

    def transaction(self, write: bool = True, durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        if write and self.read_only:
            raise StoreError(f"store {self.location} is open read-only; nothing may be written")
        return _Opened(self, write, durable)

    @contextlib.contextmanager
    def rehearsal(self) -> Iterator[Transaction]:
        # A copy in memory: a rolled-back transaction of the file itself may still spill pages into
        # the write-ahead log, and a read-only store cannot be written at all.
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            with self._lock:
                self._connection.backup(copy)
            copy.execute("PRAGMA foreign_keys = ON")
            cursor = copy.cursor()
            cursor.execute("BEGIN")
            try:
                yield _SqliteTransaction(copy, cursor)
            finally:
                cursor.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.location}: cannot rehearse in a copy: {exc}") from None
        finally:
            copy.close()

    def _open_writer_lock(self) -> int:
        try:
            # O_NOFOLLOW: a symbolic link planted at the lock's path is refused, not followed (as for the leads).
            return os.open(self.location + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                           0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the writer lock of store {self.location}: {exc.strerror}") from None

    def _take_writer_lock(self) -> None:
        """Take the writer lock for a write transaction of this connection (the caller holds ``_lock``).
        A transaction begun inside another of the same connection holds it already; one begun by a
        thread that holds it through another connection would wait for itself, and is refused. The
        service's event loop waits for it at most ``LOOP_WRITER_LOCK_WAIT_SECONDS``, first in short
        pauses (another server process holds it for a short transaction), any other thread
        ``writer_lock_wait``, or less when it was given a sooner bound (``backend.writer_lock_wait_until``: a
        session's step in the service's store threads); neither holds ``_lock`` while it waits."""
        if self._writer_depth:
            self._writer_depth += 1
            return
        held = _held_writer_locks()
        if self._writer_lock_id in held:
            raise StoreError(f"store {self.location}: this thread is writing to it through another connection; "
                             "a write through this one would wait for itself")
        if not self._try_writer_lock():
            loop = threading.get_ident() == self.deferring_thread
            self._wait_writer_lock(LOOP_WRITER_LOCK_WAIT_SECONDS if loop else writer_lock_wait_left(self.writer_lock_wait),
                                   0.00002 if loop else 0.001)
        held.add(self._writer_lock_id)
        self._writer_depth = 1

    def _try_writer_lock(self) -> bool:
        try:
            fcntl.flock(self._writer_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot lock the writer lock of store {self.location}: {exc.strerror}") from None
        return True

    def _wait_writer_lock(self, bound: float, pause: float) -> None:
        self.waiting_writers += 1
        try:
            self._poll_writer_lock(bound, pause)
        finally:
            self.waiting_writers -= 1

    def _poll_writer_lock(self, bound: float, pause: float) -> None:
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            if waited >= bound:
                raise StoreBusy(f"store {self.location}: waited {round(waited, 1):g} s for its write lock, which "
                                "another writer (such as a long 'opencapf apply') still holds; nothing was written; "
                                "try again once it is done")
            # The connection's other threads (the service's event loop) go on reading meanwhile; none of
            # them holds the writer lock when it holds ``_lock`` (their transactions hold both throughout).
            self._lock.release()
            try:
                time.sleep(min(pause, bound - waited))
            finally:
                self._lock.acquire()
            pause = min(2 * pause, WRITER_LOCK_POLL_SECONDS)
            if self._writer_depth:  # cannot be: only a transaction of this thread takes it under ``_lock``
                raise StoreError(f"store {self.location}: its writer lock was taken during the wait")
            if self._try_writer_lock():
                return

    def _release_writer_lock(self) -> None:
        self._writer_depth -= 1
        if self._writer_depth:
            return
        _held_writer_locks().discard(self._writer_lock_id)
        fcntl.flock(self._writer_lock, fcntl.LOCK_UN)

    def writer_lock_free(self) -> bool:
        if self._writer_lock is None:
            return True  # read-only: nothing may be written
        with self._lock:
            if self._writer_depth:  # a transaction of this thread holds it
                return True
            if not self._try_writer_lock():
                return False
            fcntl.flock(self._writer_lock, fcntl.LOCK_UN)
            return True

    def atomic(self) -> contextlib.AbstractContextManager[Transaction]:
        # Every writer queues on the writer lock before BEGIN IMMEDIATE: a long atomic change makes
        # them wait for it there, where SQLite's own lock alone would fail them after the busy timeout.
        if self.read_only:
            raise StoreError(f"store {self.location} is open read-only; nothing may be written")
        return _Opened(self, True, True)

    def sync(self, mine: int) -> None:
        """Return once commit number ``mine`` is on disk: fsync the log, or wait for an fsync that
        started after it was appended."""
        with self._sync_state:
            while self._synced < mine:
                if self._syncing:
                    self._sync_state.wait()
                    continue
                self._syncing = True
                target = self._written  # every commit counted here is in the log already
                self._sync_state.release()
                try:
                    self._fsync_log()
                finally:
                    self._sync_state.acquire()
                    self._syncing = False
                    self._sync_state.notify_all()
                self._synced = max(self._synced, target)

    def _fsync_log(self) -> None:
        try:
            fd = os.open(self.location + "-wal", os.O_RDONLY)
        except FileNotFoundError:  # no log: a checkpoint moved everything into the database and synced it
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StoreError(f"store {self.location}: cannot sync the write-ahead log: {exc.strerror}") from None
        finally:
            os.close(fd)

    def data_version(self) -> int:
        with self._lock:
            return self._connection.execute("PRAGMA data_version").fetchone()[0]

    def try_lead(self, name: str) -> bool:
        if not LEAD_NAME.fullmatch(name):
            raise StoreError(f"lead name {name!r} must be lower-case letters, digits and underscores")
        with self._lock:
            if name in self._leads:
                return True
            path = self.location + LEAD_LOCK_SUFFIX.format(name=name)
            try:
                # O_NOFOLLOW: a symbolic link planted at the lock's path is refused, not followed.
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open the {name} lead lock of store {self.location}: {exc.strerror}") from None
            try:
                # flock belongs to this open file: another open of the file, in this process or another
                # one, cannot take it; the kernel releases it when the holder closes it or dies.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise StoreError(f"cannot lock the {name} lead lock of store {self.location}: {exc.strerror}") from None
            self._leads[name] = fd
            return True

    def holds_lead(self, name: str) -> bool:
        with self._lock:
            return name in self._leads  # the flock lives as long as the descriptor: only close() ends it

    def append_only(self, table: str) -> list[str]:
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]

    def deletable(self, table: str, column: str, prefix: str) -> list[str]:
        return [
            f"DROP TRIGGER {table}_no_delete",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"WHEN substr(OLD.{column}, 1, {len(prefix)}) <> '{prefix}' "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]

    def incarnations(self, table: str) -> list[str]:
        # A new row takes the highest rowid plus one: the id of the newest row, deleted, is given
        # again. Each row takes a random incarnation once inserted.
        return [
            f"CREATE TRIGGER {table}_incarnation AFTER INSERT ON {table} "
            f"BEGIN UPDATE {table} SET incarnation = random() WHERE id = NEW.id; END",
        ]

    def table_exists(self, tx: Transaction, table: str) -> bool:
        return bool(tx.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))

    def close(self) -> None:
        if self._checkpointer is not None:
            # First: the connection closed last moves the whole log into the database and removes it.
            self._checkpointer.stop()
            self._checkpointer = None
        with self._lock:
            self._connection.close()
            if self._writer_lock is not None:
                os.close(self._writer_lock)
                self._writer_lock = None
            for fd in self._leads.values():
                os.close(fd)
            self._leads = {}

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF store: every piece of CAPF state, behind one small interface.

``open_store()`` picks the backend from the location (a file path means SQLite; a
``postgresql://`` DSN means PostgreSQL) and brings the schema up to date, or, with
``read_only=True`` (check mode, plans), reads it without writing a byte. Callers work in
transactions (``with store.transaction() as tx``) and use the record modules of this package
(``phones``, ``certificates``, ``audit`` ...), which speak portable SQL.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import os
import shutil
import tempfile
import threading
from typing import Iterator

from .. import faults
from ..errors import LeadLost, StoreError
from ..files import (check_private_location, discard_staged_file, ensure_private_dir, read_or_create_secret,
                     stage_private_file, write_private_file)
from ..vocabulary import CLOCK_SKEW
from .backend import Backend, Transaction
from .migrations import LATEST_VERSION, MIGRATIONS
from .sqlite import SqliteBackend
from . import postgresql

ENV_STORE = "OPENCAPF_STORE"
ENV_STATE_DIR = "OPENCAPF_STATE_DIR"
SECRET_FILE = "secret.key"
SECRET_BYTES = 32


def default_state_dir() -> str:
    """Where ``secret.key`` and ``keys/`` of a store in a database server are kept unless given
    (``--state-dir``, ``$OPENCAPF_STATE_DIR``): the directory of the default SQLite store."""
    if os.geteuid() == 0:
        return "/var/lib/opencapf"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "opencapf")


def default_location() -> str:
    """The standard store: ``$OPENCAPF_STORE``, else a per-user or system path."""
    configured = os.environ.get(ENV_STORE)
    if configured:
        return configured
    return os.path.join(default_state_dir(), "capf.db")


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.geteuid()}"


class Store:
    """An open, migrated store plus the state directory that holds its key files.

    ``read_only``: nothing is written, neither to the store nor beside it; ``scratch`` is a private
    temporary directory holding the migrated copy (or the empty store) read instead, removed on close.
    """

    def __init__(self, backend: Backend, state_dir: str, actor: str, *, location: str | None = None,
                 read_only: bool = False, scratch: str | None = None):
        self.backend = backend
        self.state_dir = state_dir
        self.actor = actor
        self.read_only = read_only
        self._location = location or backend.location
        self._scratch = scratch
        self._secret: bytes | None = None
        self._rehearsal: Transaction | None = None
        self._atomic: _Atomic | None = None
        self._lead: str | None = None  # the duty whose lead every write must hold (``leading``)

    @property
    def location(self) -> str:
        return self._location

    @property
    def keys_dir(self) -> str:
        path = os.path.join(self.state_dir, "keys")
        if not self.read_only:
            ensure_private_dir(path)
            check_private_location(path, "keys directory")
        return path

    def transaction(self, write: bool = True, durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction. ``durable=False`` is for intermediate steps of a CAPF session: the commit
        does not wait for the disk, so a power failure may lose it (and the later non-durable ones),
        leaving the state a crash just before it would leave; the session's next durable commit,
        made before anything is acknowledged to the phone, puts it on disk too (one WAL, in order).
        During a ``rehearsal`` every transaction is the rehearsal's own; during an ``atomic`` change,
        the change's own."""
        if self._rehearsal is not None:
            return contextlib.nullcontext(self._rehearsal)
        if self._atomic is not None:
            return self._atomic.join()
        if write and self.read_only:
            raise StoreError(f"store {self.location} is open read-only; nothing may be written")
        if write and self._lead is not None:
            return self._led(self.backend.transaction(write=True, durable=durable))
        return self.backend.transaction(write=write, durable=durable)

    @contextlib.contextmanager
    def _led(self, opened: contextlib.AbstractContextManager[Transaction]) -> Iterator[Transaction]:
        """A write transaction of a duty (``leading``): once begun, on the connection it commits on, the
        lead is verified; a lost one fails it before it writes anything."""
        with opened as tx:
            self._check_lead()
            yield tx

    def _check_lead(self) -> None:
        if not self.backend.holds_lead(self._lead):
            raise LeadLost(f"store {self.location}: this process no longer leads the {self._lead} duty (its store "
                           "connection was lost, and the lead with it: another process may lead it now); nothing "
                           "was written")

    def read(self) -> contextlib.AbstractContextManager[Transaction]:
        if self._rehearsal is not None:
            return contextlib.nullcontext(self._rehearsal)
        if self._atomic is not None:
            return self._atomic.join()
        return self.backend.transaction(write=False)

    @contextlib.contextmanager
    def rehearsal(self) -> Iterator[Transaction]:
        """Run a change of several steps for real, then roll it all back (``Backend.rehearsal``): every
        transaction opened inside joins one that is never committed, so each step sees what the steps
        before it did, and the result is exactly what the real run would report. Allowed on a read-only
        store; nothing is written to the store, and ``rehearsing`` tells the steps to write nothing
        beside it either (no strings file)."""
        if self._rehearsal is not None:
            raise StoreError("a rehearsal is already under way on this store")
        if self._atomic is not None:
            raise StoreError("a rehearsal cannot run inside an atomic change of the store")
        with self.backend.rehearsal() as tx:
            self._rehearsal = tx
            try:
                yield tx
            finally:
                self._rehearsal = None

    @property
    def rehearsing(self) -> bool:
        return self._rehearsal is not None

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Transaction]:
        """Make a change of several steps all or nothing (``Backend.atomic``): every transaction opened
        inside joins one write transaction of the store, committed durably once the block ends, or
        rolled back entirely when anything in it raises; so does one a step opened, failed, and had
        its error caught. It holds the lock every writer takes for its whole length: the service's
        writes wait for it. Files beside the store written through ``write_file`` are put in place
        only once it commits. Refused on a read-only store, inside a rehearsal and inside another
        atomic change (a rehearsal inside one is refused too)."""
        if self._rehearsal is not None:
            raise StoreError("an atomic change cannot run inside a rehearsal of the store")
        if self._atomic is not None:
            raise StoreError("an atomic change is already under way on this store")
        if self.read_only:
            raise StoreError(f"store {self.location} is open read-only; nothing may be written")
        change = None
        try:
            with self.backend.atomic() as tx:
                if self._lead is not None:
                    self._check_lead()
                change = self._atomic = _Atomic(tx)
                try:
                    yield tx
                    if change.failed:
                        raise StoreError("a step of an atomic change failed; nothing was written to the store")
                finally:
                    self._atomic = None
        except BaseException:
            if change is not None:
                change.discard()
            raise
        change.publish()

    def write_file(self, path: str, data: bytes) -> None:
        """Write a 0600 file that tells of a change of the store (generated authentication strings),
        replacing it atomically: at once, or during an ``atomic`` change written beside ``path`` now
        and put in place once the change commits (removed if it does not), so that the file never
        tells of a change the store does not hold, and one that cannot be written fails the change."""
        if self._atomic is None:
            write_private_file(path, data)
            return
        self._atomic.staged.append((stage_private_file(path, data), path))

    def commits(self) -> int:
        """How many write transactions the calling thread has committed to the store (``Backend.commits``)."""
        return self.backend.commits()

    def data_version(self) -> int:
        """A number that changes whenever another connection to the store has committed (never for
        this connection's own commits): a cache of what others change is fresh while it holds."""
        return self.backend.data_version()

    # -- durability deferred to the caller (the CAPF service's event loop) ---------------------

    def defer_durability(self, enabled: bool = True) -> None:
        """From now on, durable commits made by the calling thread return once appended to the log,
        before their fsync, and raise ``durable_mark``: the caller must ``sync(durable_mark)`` (in
        another thread) before it acknowledges anything that depends on them. Only with group commit;
        commits of other threads still wait for the disk themselves. ``enabled=False`` ends it. A backend
        whose commits are on disk when they return (PostgreSQL) defers nothing: the mark stays 0."""
        if not enabled:
            self.backend.deferring_thread = None
            return
        if not self.backend.group_commit:
            raise StoreError("deferred durability needs a store opened with group_commit")
        self.backend.deferring_thread = threading.get_ident()

    @property
    def durable_mark(self) -> int:
        """The last durable commit of the deferring thread (0: none yet)."""
        return self.backend.durable_mark

    def sync(self, mark: int) -> None:
        """Return once commit number ``mark`` is on disk (one fsync serves every commit before it)."""
        self.backend.sync(mark)

    @property
    def clock_skew(self) -> _dt.timedelta:
        """How far the clock of another process writing this store may run behind this process's clock: a
        store several hosts share (PostgreSQL) allows ``CLOCK_SKEW`` between the hosts' clocks; the
        processes of one host's SQLite store read one clock."""
        return CLOCK_SKEW if self.backend.shared_by_hosts else _dt.timedelta(0)

    def try_lead(self, name: str) -> bool:
        """Whether this connection leads duty ``name`` (taking the lead when nobody holds it): of all
        the processes sharing the store, one leads at a time, until it closes the store or ends."""
        return self.backend.try_lead(name)

    def holds_lead(self, name: str) -> bool:
        """Whether this connection still holds the lead of duty ``name`` (taken by ``try_lead``), verified
        now without taking it: a PostgreSQL lead is lost with its connection, which the store makes again
        at its next transaction holding no lead."""
        return self.backend.holds_lead(name)

    @contextlib.contextmanager
    def leading(self, name: str) -> Iterator[None]:
        """Do duty ``name``'s work: every write transaction (and atomic change) of this store begun inside
        first verifies, on the connection it commits on, that this connection holds the lead
        (``holds_lead``), and fails with ``LeadLost``, writing nothing, once it does not. So a duty writes
        only while its lead is held, whatever happens to the connection part-way through: a commit on the
        connection whose session holds the lock is a commit under the lead. Meant for a store used by the
        duty alone (the scheduler's own connection, ``monitor run``)."""
        if self._lead is not None:
            raise StoreError(f"the {self._lead} duty is under way on this store; the {name} duty cannot run inside it")
        self._lead = name
        try:
            yield
        finally:
            self._lead = None

    def secret(self) -> bytes:
        """The store's keyed-hash secret, kept in a 0600 file outside the database."""
        if self._secret is None:
            path = os.path.join(self.state_dir, SECRET_FILE)
            if self.read_only and not os.path.exists(path):
                # What a real run would create: a fresh secret, which no stored hash matches either.
                self._secret = os.urandom(SECRET_BYTES)
            else:
                self._secret = read_or_create_secret(path, SECRET_BYTES)
        return self._secret

    def schema_version(self) -> int:
        with self.read() as tx:
            return _current_version(self.backend, tx)

    def close(self) -> None:
        self.backend.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Atomic:
    """An atomic change under way (``Store.atomic``): its transaction, whether a step that joined it
    failed, and the files to put in place once it commits."""

    def __init__(self, tx: Transaction):
        self.tx = tx
        self.failed = False
        self.staged: list[tuple[str, str]] = []  # (the file written, the path it goes to)

    @contextlib.contextmanager
    def join(self) -> Iterator[Transaction]:
        try:
            yield self.tx
        except BaseException:
            self.failed = True
            raise

    def discard(self) -> None:
        for temporary, _path in self.staged:
            discard_staged_file(temporary)

    def publish(self) -> None:
        failures = []
        for temporary, path in self.staged:
            try:
                os.replace(temporary, path)
            except OSError as exc:
                failures.append(f"{path} could not be put in place ({exc.strerror or exc}); its content is in "
                                f"{temporary}")
        if failures:
            raise StoreError("the change was written to the store, but " + "; ".join(failures))


def _current_version(backend: Backend, tx: Transaction) -> int:
    if not backend.table_exists(tx, "schema_migrations"):
        return 0
    return tx.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") or 0


def _render(backend: Backend, statement: str, now: str) -> list[str]:
    if statement.startswith("{append_only:"):
        return backend.append_only(statement[len("{append_only:"):-1])
    if statement.startswith("{deletable:"):
        table, column, prefix = statement[len("{deletable:"):-1].split(":")
        return backend.deletable(table, column, prefix)
    if statement.startswith("{incarnations:"):
        return backend.incarnations(statement[len("{incarnations:"):-1])
    return [statement.format(**backend.dialect, now=now)]


def _check_version(backend: Backend, version: int) -> None:
    if version > LATEST_VERSION:
        raise StoreError(
            f"store {backend.location} has schema version {version}, newer than this engine "
            f"understands ({LATEST_VERSION}); upgrade opencapf"
        )


def _apply_next(backend: Backend, tx: Transaction, target: int | None) -> int | None:
    """Apply the next pending migration (up to ``target``, default all) in ``tx``; its number, or
    None when the store is up to date."""
    from ..vocabulary import format_utc, utc_now

    version = _current_version(backend, tx)
    _check_version(backend, version)
    pending = [m for m in MIGRATIONS if version < m[0] <= (LATEST_VERSION if target is None else target)]
    if not pending:
        return None
    number, description, statements = pending[0]
    if version == 0:
        tx.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied_at TEXT NOT NULL)"
        )
    now = format_utc(utc_now())
    for statement in statements:
        for sql in _render(backend, statement, now):
            tx.execute(sql)
            faults.checkpoint("migration.statement")
    tx.execute(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
        (number, description, now),
    )
    return number


def migrate(backend: Backend, target: int | None = None) -> int:
    """Apply every pending migration (up to ``target``, default all), each in its own transaction,
    together with its schema_migrations row; return the final version. A crash part-way through a
    migration leaves the store at the previous version, and the next open applies it again. A store
    that is up to date is only read: opening it does not wait for a writer that holds the write lock."""
    with backend.transaction(write=False) as tx:
        version = _current_version(backend, tx)
    _check_version(backend, version)
    if version >= (LATEST_VERSION if target is None else target):
        return version
    while True:
        with backend.transaction(write=True) as tx:
            if _apply_next(backend, tx, target) is None:
                return _current_version(backend, tx)


def _check_location(location: str, state_dir: str) -> None:
    """Refuse a store file, store directory or state directory that the group or others may write."""
    check_private_location(os.path.dirname(location), "store directory")
    check_private_location(location, "store")
    if state_dir != os.path.dirname(location):
        check_private_location(state_dir, "state directory")


def _open_read_only(location: str, create: bool) -> tuple[Backend, str | None]:
    """The store as it is, without writing to it: a current one is read in place; one at an older
    schema version through a migrated copy, and a missing one as an empty store, both made in a
    private temporary directory (returned, for removal on close)."""
    source = None
    if os.path.exists(location):
        source = SqliteBackend(location, read_only=True)
        try:
            with source.transaction(write=False) as tx:
                version = _current_version(source, tx)
            _check_version(source, version)
        except BaseException:
            source.close()
            raise
        if version == LATEST_VERSION:
            return source, None
    elif not create:
        raise StoreError(f"store {location} does not exist; run 'init' first")
    scratch = tempfile.mkdtemp(prefix="opencapf-check-")
    copy = None
    try:
        path = os.path.join(scratch, os.path.basename(location))
        if source is not None:
            source.copy_to(path)
        copy = SqliteBackend(path)
        migrate(copy)
    except BaseException:
        if copy is not None:
            copy.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        if source is not None:
            source.close()
    return copy, scratch


def open_store(location: str | None = None, *, state_dir: str | None = None, actor: str | None = None,
               create: bool = True, group_commit: bool = False, read_only: bool = False) -> Store:
    """Open (creating and migrating when needed) the store at ``location``. ``group_commit``: durable
    commits of concurrent threads share their fsyncs (the CAPF service); each is still on disk when
    its transaction returns. ``read_only``: write no byte, neither to the store nor beside it (check
    mode, plans); a store at an older schema version is read through a migrated temporary copy, a
    missing one (with ``create``) as an empty store, and a missing secret is not created.

    The store's real location (symbolic links resolved) is the one place every file beside it is
    found from: ``secret.key``, ``keys/``, the write-ahead log and the writer lock. A store file or
    directory that the group or others may write is refused."""
    location = location or default_location()
    if postgresql.is_location(location):
        return _open_postgresql(location, state_dir=state_dir, actor=actor, create=create,
                                group_commit=group_commit, read_only=read_only)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(f"store location scheme {scheme!r} is not supported by this engine; use a file path "
                         "or a postgresql:// connection string")
    location = os.path.realpath(location)
    state_dir = os.path.realpath(state_dir or os.environ.get(ENV_STATE_DIR) or os.path.dirname(location))
    _check_location(location, state_dir)
    scratch = None
    if read_only:
        backend, scratch = _open_read_only(location, create)
    else:
        backend = SqliteBackend(location, create=create, group_commit=group_commit)
        try:
            migrate(backend)
        except BaseException:
            backend.close()
            raise
    return Store(backend, state_dir, actor or _default_actor(), location=location, read_only=read_only,
                 scratch=scratch)


def _open_postgresql(location: str, *, state_dir: str | None, actor: str | None, create: bool,
                     group_commit: bool, read_only: bool) -> Store:
    """A store in a PostgreSQL database (which must exist; its schema is created with ``create``).
    Its state directory is ``state_dir``, else ``$OPENCAPF_STATE_DIR``, else ``default_state_dir()``.
    ``read_only``: every transaction is rolled back; an older schema is read through the pending
    migrations applied inside each transaction, so nothing is ever written."""
    postgresql.check_dsn(location)
    state_dir = os.path.realpath(state_dir or os.environ.get(ENV_STATE_DIR) or default_state_dir())
    if os.path.exists(state_dir):
        check_private_location(state_dir, "state directory")
    backend = postgresql.PostgresBackend(location, group_commit=group_commit, read_only=read_only)
    try:
        with backend.transaction(write=False) as tx:
            version = _current_version(backend, tx)
        _check_version(backend, version)
        if version == 0 and not create:
            raise StoreError(f"store {location} has no CAPF schema yet; run 'init' first")
        if not read_only:
            migrate(backend)
        elif version < LATEST_VERSION:
            backend.prepare_read = lambda tx: _apply_all(backend, tx)
    except BaseException:
        backend.close()
        raise
    return Store(backend, state_dir, actor or _default_actor(), location=location, read_only=read_only)


def _apply_all(backend: Backend, tx: Transaction) -> None:
    while _apply_next(backend, tx, None) is not None:
        pass


@contextlib.contextmanager
def opened(location: str | None = None, **kwargs) -> Iterator[Store]:
    store = open_store(location, **kwargs)
    try:
        yield store
    finally:
        store.close()

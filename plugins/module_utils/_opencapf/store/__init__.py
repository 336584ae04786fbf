# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF store: every piece of CAPF state, behind one small interface.

``open_store()`` picks the backend from the location (a file path means SQLite; a
``postgresql://`` DSN means PostgreSQL) and brings the schema up to date. Callers work in
transactions (``with store.transaction() as tx``) and use the record modules of this package
(``phones``, ``certificates``, ``audit`` ...), which speak portable SQL.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import threading
from typing import Iterator

from .. import faults
from ..errors import StoreError
from ..files import ensure_private_dir, read_or_create_secret
from .backend import Backend, Transaction
from .migrations import LATEST_VERSION, MIGRATIONS
from .sqlite import SqliteBackend

ENV_STORE = "OPENCAPF_STORE"
ENV_STATE_DIR = "OPENCAPF_STATE_DIR"
SECRET_FILE = "secret.key"


def default_location() -> str:
    """The standard store: ``$OPENCAPF_STORE``, else a per-user or system path."""
    configured = os.environ.get(ENV_STORE)
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/var/lib/opencapf/capf.db"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "opencapf", "capf.db")


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.geteuid()}"


class Store:
    """An open, migrated store plus the state directory that holds its key files."""

    def __init__(self, backend: Backend, state_dir: str, actor: str):
        self.backend = backend
        self.state_dir = state_dir
        self.actor = actor
        self._secret: bytes | None = None

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def keys_dir(self) -> str:
        return ensure_private_dir(os.path.join(self.state_dir, "keys"))

    def transaction(self, write: bool = True, durable: bool = True) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction. ``durable=False`` is for intermediate steps of a CAPF session: the commit
        does not wait for the disk, so a power failure may lose it (and the later non-durable ones),
        leaving the state a crash just before it would leave; the session's next durable commit,
        made before anything is acknowledged to the phone, puts it on disk too (one WAL, in order)."""
        return self.backend.transaction(write=write, durable=durable)

    def read(self) -> contextlib.AbstractContextManager[Transaction]:
        return self.backend.transaction(write=False)

    def data_version(self) -> int:
        """A number that changes whenever another connection to the store has committed (never for
        this connection's own commits): a cache of what others change is fresh while it holds."""
        return self.backend.data_version()

    # -- durability deferred to the caller (the CAPF service's event loop) ---------------------

    def defer_durability(self, enabled: bool = True) -> None:
        """From now on, durable commits made by the calling thread return once appended to the log,
        before their fsync, and raise ``durable_mark``: the caller must ``sync(durable_mark)`` (in
        another thread) before it acknowledges anything that depends on them. Only with group commit;
        commits of other threads still wait for the disk themselves. ``enabled=False`` ends it."""
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

    def try_lead(self, name: str) -> bool:
        """Whether this connection leads duty ``name`` (taking the lead when nobody holds it): of all
        the processes sharing the store, one leads at a time, until it closes the store or ends."""
        return self.backend.try_lead(name)

    def secret(self) -> bytes:
        """The store's keyed-hash secret, kept in a 0600 file outside the database."""
        if self._secret is None:
            self._secret = read_or_create_secret(os.path.join(self.state_dir, SECRET_FILE))
        return self._secret

    def schema_version(self) -> int:
        with self.read() as tx:
            return _current_version(self.backend, tx)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _current_version(backend: Backend, tx: Transaction) -> int:
    if not backend.table_exists(tx, "schema_migrations"):
        return 0
    return tx.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") or 0


def _render(backend: Backend, statement: str) -> list[str]:
    if statement.startswith("{append_only:"):
        return backend.append_only(statement[len("{append_only:"):-1])
    return [statement.format(**backend.dialect)]


def migrate(backend: Backend, target: int | None = None) -> int:
    """Apply every pending migration (up to ``target``, default all), each in its own transaction,
    together with its schema_migrations row; return the final version. A crash part-way through a
    migration leaves the store at the previous version, and the next open applies it again."""
    from ..vocabulary import format_utc, utc_now

    while True:
        with backend.transaction(write=True) as tx:
            version = _current_version(backend, tx)
            if version > LATEST_VERSION:
                raise StoreError(
                    f"store {backend.location} has schema version {version}, newer than this engine "
                    f"understands ({LATEST_VERSION}); upgrade opencapf"
                )
            pending = [m for m in MIGRATIONS if version < m[0] <= (LATEST_VERSION if target is None else target)]
            if not pending:
                return version
            number, description, statements = pending[0]
            if version == 0:
                tx.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                    "applied_at TEXT NOT NULL)"
                )
            for statement in statements:
                for sql in _render(backend, statement):
                    tx.execute(sql)
                    faults.checkpoint("migration.statement")
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (number, description, format_utc(utc_now())),
            )


def open_store(location: str | None = None, *, state_dir: str | None = None, actor: str | None = None,
               create: bool = True, group_commit: bool = False) -> Store:
    """Open (creating and migrating when needed) the store at ``location``. ``group_commit``: durable
    commits of concurrent threads share their fsyncs (the CAPF service); each is still on disk when
    its transaction returns."""
    location = location or default_location()
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(f"store location scheme {scheme!r} is not supported by this engine; use a file path")
    backend = SqliteBackend(location, create=create, group_commit=group_commit)
    try:
        migrate(backend)
    except BaseException:
        backend.close()
        raise
    state_dir = state_dir or os.environ.get(ENV_STATE_DIR) or os.path.dirname(backend.location)
    return Store(backend, state_dir, actor or _default_actor())


@contextlib.contextmanager
def opened(location: str | None = None, **kwargs) -> Iterator[Store]:
    store = open_store(location, **kwargs)
    try:
        yield store
    finally:
        store.close()

"""The sessions of a PostgreSQL store seen from the database: who holds a duty's lead, who waits for the
writers' lock, and the end of a session as a lost connection ends it (``pg_terminate_backend``)."""

from __future__ import annotations

import time

from _opencapf.store.postgresql import WRITE_LOCK_KEY, lead_key

_ADVISORY = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = %s AND classid::bigint = %s "
             "AND objid::bigint = %s AND objsubid = 1")


def _halves(key: int) -> tuple[int, int]:
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF  # pg_locks shows a bigint key in two halves


def lead_holder(connection, name: str) -> int | None:
    """The backend pid of the session that holds duty ``name``'s lead, or None."""
    row = connection.execute(_ADVISORY, (True, *_halves(lead_key(name)))).fetchone()
    return None if row is None else row[0]


def waits_to_write(connection, pid: int) -> bool:
    """Whether session ``pid`` waits for the lock every writer of the store takes."""
    return pid in {row[0] for row in connection.execute(_ADVISORY, (False, *_halves(WRITE_LOCK_KEY))).fetchall()}


def until(condition, seconds: float = 30.0, what: str = "the condition"):
    """Poll ``condition`` until it gives a true value; that value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {seconds} s")
        time.sleep(0.02)


def cut(connection, pid: int) -> None:
    """End session ``pid`` as a lost connection ends it: its locks, its leads among them, are released."""
    assert connection.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]

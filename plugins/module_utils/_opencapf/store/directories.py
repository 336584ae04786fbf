# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LDAP directory configurations as stored, and the devices each directory's entries map to.

A configuration is stored as sorted JSON without its bind password (a sealed secret, see
``secretbox``); rows are returned with ``config`` and ``last_result`` decoded.
"""

from __future__ import annotations

import json
from typing import Any

from ..vocabulary import format_utc, utc_now
from .backend import Transaction


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["config"], row["last_result"] = json.loads(row["config"]), json.loads(row["last_result"])
    return row


def get(tx: Transaction, name: str) -> dict[str, Any] | None:
    """One directory by name, or None."""
    return _decoded(tx.one("SELECT * FROM directories WHERE name = ?", (name,)))


def listed(tx: Transaction) -> list[dict[str, Any]]:
    """Every directory, by name."""
    return [_decoded(row) for row in tx.query("SELECT * FROM directories ORDER BY name")]


def due(tx: Transaction, now: str) -> list[dict[str, Any]]:
    """Directories whose scheduled sync is due at ``now``, the longest due first."""
    return [_decoded(row) for row in tx.query(
        "SELECT * FROM directories WHERE next_sync_at IS NOT NULL AND next_sync_at <= ? ORDER BY next_sync_at, name",
        (now,))]


def save(tx: Transaction, name: str, config: dict, next_sync_at: str | None) -> int:
    """Create or update a directory's configuration and its next scheduled sync; return its id."""
    now = format_utc(utc_now())
    encoded = json.dumps(config, sort_keys=True)
    row = tx.one("SELECT id FROM directories WHERE name = ?", (name,))
    if row is None:
        return tx.insert("INSERT INTO directories (name, config, next_sync_at, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?)", (name, encoded, next_sync_at, now, now))
    tx.execute("UPDATE directories SET config = ?, next_sync_at = ?, updated_at = ? WHERE id = ?",
               (encoded, next_sync_at, now, row["id"]))
    return row["id"]


def record_sync(tx: Transaction, directory_id: int, at: str, next_sync_at: str | None, result: dict) -> None:
    """A sync that ran at ``at``: the first one sets ``first_synced_at``."""
    tx.execute("UPDATE directories SET first_synced_at = COALESCE(first_synced_at, ?), last_synced_at = ?, "
               "next_sync_at = ?, last_result = ?, updated_at = ? WHERE id = ?",
               (at, at, next_sync_at, json.dumps(result, sort_keys=True), at, directory_id))


def set_next_sync(tx: Transaction, directory_id: int, next_sync_at: str | None, result: dict) -> None:
    """Postpone a scheduled sync that failed (``result`` says why) without counting it as a sync."""
    tx.execute("UPDATE directories SET next_sync_at = ?, last_result = ?, updated_at = ? WHERE id = ?",
               (next_sync_at, json.dumps(result, sort_keys=True), format_utc(utc_now()), directory_id))


def devices(tx: Transaction, directory_id: int) -> dict[str, str]:
    """The devices the directory's entries mapped to at its last sync: {device name: entry DN}."""
    return {row["device_name"]: row["entry_dn"] for row in tx.query(
        "SELECT device_name, entry_dn FROM directory_devices WHERE directory_id = ?", (directory_id,))}


def owners(tx: Transaction, names, *, exclude: int | None = None) -> dict[str, str]:
    """Which directory (other than ``exclude``) has each of ``names`` among its devices: {device: directory name}."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = tx.query("SELECT dd.device_name, d.name FROM directory_devices dd JOIN directories d "
                    "ON d.id = dd.directory_id WHERE dd.directory_id <> ? ORDER BY d.name DESC",
                    (-1 if exclude is None else exclude,))
    return {row["device_name"]: row["name"] for row in rows if row["device_name"] in wanted}


def add_devices(tx: Transaction, directory_id: int, mapped: dict[str, str]) -> None:
    """Record devices (name -> entry DN) as the directory's."""
    tx.executemany("INSERT INTO directory_devices (directory_id, device_name, entry_dn) VALUES (?, ?, ?)",
                   [(directory_id, name, dn) for name, dn in sorted(mapped.items())])


def update_devices(tx: Transaction, directory_id: int, mapped: dict[str, str]) -> None:
    """A recorded device's entry DN changed (the entry was renamed or moved)."""
    tx.executemany("UPDATE directory_devices SET entry_dn = ? WHERE directory_id = ? AND device_name = ?",
                   [(dn, directory_id, name) for name, dn in sorted(mapped.items())])


def forget_devices(tx: Transaction, directory_id: int, names) -> None:
    """Devices no longer the directory's (their entry left it)."""
    tx.executemany("DELETE FROM directory_devices WHERE directory_id = ? AND device_name = ?",
                   [(directory_id, name) for name in sorted(names)])


def take_ticket(tx: Transaction, name: str) -> int:
    """The next sync ticket of directory ``name``, taken (in a write transaction) before the sync reads the
    directory: a later ticket is a later reading."""
    tx.execute("INSERT INTO directory_syncs (name, taken, applied) VALUES (?, 0, 0) ON CONFLICT (name) DO NOTHING",
               (name,))
    tx.execute("UPDATE directory_syncs SET taken = taken + 1 WHERE name = ?", (name,))
    return tx.scalar("SELECT taken FROM directory_syncs WHERE name = ?", (name,))


def applied_ticket(tx: Transaction, name: str) -> int:
    """The ticket of the directory's sync that applied last (0: none with a ticket)."""
    return tx.scalar("SELECT applied FROM directory_syncs WHERE name = ?", (name,)) or 0


def mark_applied(tx: Transaction, name: str, ticket: int) -> None:
    """The sync of ``ticket`` applied its reading of the directory."""
    tx.execute("UPDATE directory_syncs SET applied = ? WHERE name = ?", (ticket, name))


def password_ticket(tx: Transaction, name: str) -> int:
    """The ticket of the latest sync of the directory that was given a bind password, bound with it and
    ended (0: none with a ticket)."""
    return tx.scalar("SELECT password FROM directory_syncs WHERE name = ?", (name,)) or 0


def mark_password_given(tx: Transaction, name: str, ticket: int) -> None:
    """The sync of ``ticket`` was given a bind password and bound with it (never lowers the ticket kept)."""
    tx.execute("UPDATE directory_syncs SET password = ? WHERE name = ? AND password < ?", (ticket, name, ticket))

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service parameters as stored: one JSON value per parameter, defaults for the rest."""

from __future__ import annotations

import json
from typing import Any

from .. import parameters
from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction


def read(tx: Transaction) -> dict[str, Any]:
    """Every service parameter: stored values over defaults. The other values kept in the same table
    (the online CA mapping, ``read_raw``) are not parameters and are left out."""
    values = parameters.defaults()
    for row in tx.query("SELECT name, value FROM service_parameters"):
        if row["name"] in values:
            values[row["name"]] = json.loads(row["value"])
    return values


def value(tx: Transaction, name: str) -> Any:
    """One service parameter: its stored value, else its default."""
    row = tx.one("SELECT value FROM service_parameters WHERE name = ?", (name,))
    return in_force(name, None if row is None else row["value"])


# The stored value of the service parameter its one parameter names (NULL: none stored, the default is in
# force), as a scalar subquery: another statement of the store asks it with what it asks anyway.
STORED_VALUE = "(SELECT value FROM service_parameters WHERE name = ?)"


def in_force(name: str, stored: str | None) -> Any:
    """The value of the service parameter ``name`` whose stored value (``STORED_VALUE``) is ``stored``."""
    return parameters.defaults()[name] if stored is None else json.loads(stored)


def read_raw(tx: Transaction, name: str, default: Any = None) -> Any:
    """A stored value that is not a service parameter proper (e.g. the online CA mapping)."""
    row = tx.one("SELECT value FROM service_parameters WHERE name = ?", (name,))
    return default if row is None else json.loads(row["value"])


def write(tx: Transaction, actor: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Store validated values; return ``{name: (before, after)}`` for what really changed."""
    current = read(tx)
    changed = {}
    now = format_utc(utc_now())
    for name, value in changes.items():
        before = current.get(name, read_raw(tx, name))
        if before == value:
            continue
        tx.execute(
            "INSERT INTO service_parameters (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (name, json.dumps(value, sort_keys=True), now),
        )
        changed[name] = (before, value)
    if changed:
        audit.record(tx, actor, "service.update", "service_parameters",
                     changes={k: {"before": b, "after": a} for k, (b, a) in changed.items()})
    return changed

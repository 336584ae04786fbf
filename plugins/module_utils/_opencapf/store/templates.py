# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device templates as stored: a name and its settings as JSON by option name (never a secret).

Rows are returned with ``settings`` decoded; settings are stored with sorted keys, so two equal
templates are equal as stored.
"""

from __future__ import annotations

import json
from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["settings"] = json.loads(row["settings"])
    return row


def get(tx: Transaction, name: str) -> dict[str, Any] | None:
    """One template (``name``, ``settings``, ``created_at``, ``updated_at``), or None."""
    return _decoded(tx.one("SELECT name, settings, created_at, updated_at FROM device_templates WHERE name = ?",
                           (name,)))


def every(tx: Transaction) -> list[dict[str, Any]]:
    """Every template, by name."""
    return [_decoded(row) for row in tx.query(
        "SELECT name, settings, created_at, updated_at FROM device_templates ORDER BY name")]


def put(tx: Transaction, actor: str, name: str, settings: dict[str, Any], **details: Any) -> None:
    """Create template ``name`` or replace its settings; audited as ``template.define`` with the settings
    and ``details``."""
    now = format_utc(utc_now())
    tx.execute(
        "INSERT INTO device_templates (name, settings, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        (name, json.dumps(settings, sort_keys=True), now, now),
    )
    audit.record(tx, actor, "template.define", name, settings=settings, **details)


def delete(tx: Transaction, actor: str, name: str) -> bool:
    """Remove template ``name``; whether there was one. Audited as ``template.remove``."""
    removed = tx.execute("DELETE FROM device_templates WHERE name = ?", (name,)) > 0
    if removed:
        audit.record(tx, actor, "template.remove", name)
    return removed

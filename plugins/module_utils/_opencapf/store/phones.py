# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phones and their CAPF settings as stored (names canonical upper case)."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction

# Columns an administrator sets; the rest is kept by the engine.
SETTINGS = (
    "description", "model", "device_pool", "security_mode", "operation", "auth_mode",
    "key_order", "rsa_key_size", "ec_key_size", "operation_deadline",
)


def get(tx: Transaction, name: str) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM phones WHERE name = ?", (name.upper(),))


def create(tx: Transaction, actor: str, name: str, **settings: Any) -> dict[str, Any]:
    """Insert a phone; unknown keys are refused by the caller's validation, not here."""
    now = format_utc(utc_now())
    columns = {key: value for key, value in settings.items() if value is not None}
    names = ["name", "created_at", "updated_at", *columns]
    tx.insert(
        f"INSERT INTO phones ({', '.join(names)}) VALUES ({', '.join(['?'] * len(names))})",
        (name.upper(), now, now, *columns.values()),
    )
    audit.record(tx, actor, "phone.create", name.upper(), **{k: v for k, v in columns.items() if k in SETTINGS})
    return get(tx, name)


def update(tx: Transaction, actor: str, name: str, changes: dict[str, Any], action: str = "phone.update") -> None:
    if not changes:
        return
    assignments = ", ".join(f"{column} = ?" for column in changes)
    tx.execute(
        f"UPDATE phones SET {assignments}, updated_at = ? WHERE name = ?",
        (*changes.values(), format_utc(utc_now()), name.upper()),
    )
    audit.record(tx, actor, action, name.upper(), **{k: v for k, v in changes.items() if not k.startswith("auth_")})


def ensure(tx: Transaction, actor: str, name: str) -> dict[str, Any]:
    """The phone row, created with default settings when missing."""
    return get(tx, name) or create(tx, actor, name)


def delete(tx: Transaction, actor: str, name: str) -> bool:
    """Remove a phone with its certificates and CSRs (cascade); audited."""
    removed = tx.execute("DELETE FROM phones WHERE name = ?", (name.upper(),)) > 0
    if removed:
        audit.record(tx, actor, "phone.delete", name.upper())
    return removed


def by_name(tx: Transaction, names=None) -> dict[str, dict[str, Any]]:
    """Phones keyed by name: all of them, or those in ``names`` (one query per 500 names)."""
    if names is None:
        return {row["name"]: row for row in tx.query("SELECT * FROM phones")}
    names = sorted({name.upper() for name in names})
    result = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        for row in tx.query(f"SELECT * FROM phones WHERE name IN ({', '.join('?' * len(chunk))})", chunk):
            result[row["name"]] = row
    return result


def missing_names(tx: Transaction, names) -> list[str]:
    """The names (canonical upper case, sorted) that no phone in the store has."""
    wanted = sorted({name.upper() for name in names})
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        found.update(row["name"] for row in tx.query(
            f"SELECT name FROM phones WHERE name IN ({', '.join('?' * len(chunk))})", chunk))
    return [name for name in wanted if name not in found]


def set_operation_result(tx: Transaction, actor: str, phone: dict[str, Any], status: str, reason: str = "",
                         *, clear_operation: bool = False, **details: Any) -> None:
    """Record how the phone's pending operation went; ``clear_operation`` sets it back to ``none``."""
    now = format_utc(utc_now())
    operation = "none" if clear_operation else phone["operation"]
    tx.execute(
        "UPDATE phones SET operation = ?, operation_status = ?, operation_reason = ?, updated_at = ? WHERE id = ?",
        (operation, status, reason, now, phone["id"]),
    )
    audit.record(tx, actor, f"phone.operation_{status}", phone["name"], operation=phone["operation"], reason=reason,
                 **details)


def record_auth_failure(tx: Transaction, actor: str, phone: dict[str, Any], lockout_failures: int,
                        reason: str) -> tuple[int, bool]:
    """Count one failed authentication; lock the phone at ``lockout_failures``. Returns (failures, locked)."""
    failures = int(phone["auth_failures"]) + 1
    locked = failures >= lockout_failures
    tx.execute(
        "UPDATE phones SET auth_failures = ?, locked = ?, operation_status = 'failed', operation_reason = ?, "
        "updated_at = ? WHERE id = ?",
        (failures, int(locked or bool(phone["locked"])), reason, format_utc(utc_now()), phone["id"]),
    )
    audit.record(tx, actor, "phone.auth_failed", phone["name"], failures=failures, locked=locked, reason=reason)
    return failures, locked


def record_session_start(tx: Transaction, phone: dict[str, Any], operation_pending: bool) -> None:
    """An authenticated session: reset the failure count and mark a pending operation in progress.

    A finished operation (succeeded, lapsed) stays as it is: the phone is only checking in, for
    example again after a crash of the service cost it the END_SESSION of the session that succeeded.
    """
    status = "in_progress" if operation_pending else phone["operation_status"]
    tx.execute(
        "UPDATE phones SET auth_failures = 0, operation_status = ?, last_session_at = ? WHERE id = ?",
        (status, format_utc(utc_now()), phone["id"]),
    )

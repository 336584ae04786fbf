# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding phones: the bulk-administration query, shared by bulk jobs, reports and capf_info.

A query is a mapping of filters, all of which must hold: ``names`` (explicit list),
``name_pattern`` (``*``/``?`` wildcards, case-insensitive), ``device_pool``, ``model``,
``security_mode``, ``operation_status`` and ``lsc_status`` (each one value or a list),
``lsc_expires_before`` (date or time, UTC). One SQL statement selects the phones together with
their current LSC (the newest LSC that is not stale).
"""

from __future__ import annotations

from typing import Any

from .errors import ValidationError
from .store import phones as phone_records
from .store.backend import Transaction
from .vocabulary import (CERTIFICATE_STATUSES, OPERATION_STATUSES, SECURITY_MODES, check_choice, format_utc,
                         normalise_device_name, parse_utc)

UNMATCHED_SHOWN = 20
QUERY_FIELDS = ("names", "name_pattern", "device_pool", "model", "security_mode", "operation_status", "lsc_status",
                "lsc_expires_before")
LSC_STATUSES = ("none",) + CERTIFICATE_STATUSES
_IN_LIMIT = 500

# A phone's current LSC: its newest LSC that is not stale (a stale one was never installed), i.e.
# the one no newer non-stale LSC follows. Both lookups are seeks in the index certificates_current_lsc,
# which holds every column a listing shows, so no certificate row (each with its PEM) is read.
_FROM_WITH_LSC = (
    " FROM phones p LEFT JOIN certificates l ON l.phone_id = p.id AND l.kind = 'lsc' AND l.status != 'stale'"
    " AND NOT EXISTS (SELECT 1 FROM certificates x WHERE x.phone_id = p.id AND x.kind = 'lsc'"
    " AND x.status != 'stale' AND x.id > l.id)"
)
_LSC_COLUMNS = ("l.id AS lsc_id, l.serial AS lsc_serial, l.status AS lsc_status, l.not_after AS lsc_not_after, "
                "l.issued_at AS lsc_issued_at, l.installed_at AS lsc_installed_at")
# Orders of a listing. By LSC expiry, phones without a current LSC come first (they need one most).
ORDERS = {"device_name": "p.name", "lsc_expiry": "l.not_after, p.name"}


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_query(query: dict | None, field: str = "query") -> dict[str, Any]:
    """Validate a query and return it in canonical form (empty lists dropped)."""
    query = dict(query or {})
    unknown = sorted(set(query) - set(QUERY_FIELDS))
    if unknown:
        raise ValidationError(field, "accepts only %s" % ", ".join(QUERY_FIELDS), unknown)
    result: dict[str, Any] = {}
    names = _as_list(query.get("names"))
    if names:
        result["names"] = sorted({normalise_device_name(n, f"{field}.names[{i}]") for i, n in enumerate(names)})
    pattern = query.get("name_pattern")
    if pattern:
        if not isinstance(pattern, str) or len(pattern) > 64:
            raise ValidationError(f"{field}.name_pattern", "must be a string of at most 64 characters", pattern)
        result["name_pattern"] = pattern.upper()
    for key in ("device_pool", "model"):
        values = [str(item) for item in _as_list(query.get(key))]
        if values:
            result[key] = sorted(set(values))
    for key, choices in (("security_mode", SECURITY_MODES), ("operation_status", OPERATION_STATUSES),
                         ("lsc_status", LSC_STATUSES)):
        values = [check_choice(f"{field}.{key}", item, choices) for item in _as_list(query.get(key))]
        if values:
            result[key] = sorted(set(values))
    if query.get("lsc_expires_before") not in (None, ""):
        result["lsc_expires_before"] = format_utc(parse_utc(query["lsc_expires_before"],
                                                            f"{field}.lsc_expires_before"))
    return result


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def statement(query: dict | None, columns: str, *, with_lsc: bool = True,
              order: str = "device_name") -> tuple[str, list, set | None]:
    """The SQL selecting ``columns`` (of ``p``, and ``l`` with ``with_lsc``) of the phones that match
    a validated query, in ``order``; its parameters; and the names to keep when the query names
    more phones than one statement can list (None: keep every row)."""
    query = query or {}
    with_lsc = with_lsc or order != "device_name" or bool(query.get("lsc_status") or query.get("lsc_expires_before"))
    where, params = [], []
    names = query.get("names") or []
    if names and len(names) <= _IN_LIMIT:
        where.append("p.name IN (%s)" % ", ".join("?" * len(names)))
        params.extend(names)
    if query.get("name_pattern"):
        where.append("p.name LIKE ? ESCAPE '\\'")
        params.append(_like(query["name_pattern"]))
    for key in ("device_pool", "model", "security_mode", "operation_status"):
        if query.get(key):
            where.append(f"p.{key} IN (%s)" % ", ".join("?" * len(query[key])))
            params.extend(query[key])
    if query.get("lsc_status"):
        statuses = [s for s in query["lsc_status"] if s != "none"]
        parts = []
        if statuses:
            parts.append("l.status IN (%s)" % ", ".join("?" * len(statuses)))
            params.extend(statuses)
        if "none" in query["lsc_status"]:
            parts.append("l.id IS NULL")
        where.append("(" + " OR ".join(parts) + ")")
    if query.get("lsc_expires_before"):
        where.append("l.not_after < ?")
        params.append(query["lsc_expires_before"])
    sql = f"SELECT {columns}" + (_FROM_WITH_LSC if with_lsc else " FROM phones p")
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY " + ORDERS[order]
    return sql, params, set(names) if names and len(names) > _IN_LIMIT else None


def select(tx: Transaction, query: dict | None, *, with_lsc: bool = True) -> list[dict[str, Any]]:
    """Phones matching a (validated) query, by name, with their current LSC columns.

    ``with_lsc=False`` returns the phone columns only (a bulk job needs no more); the current LSC is
    still looked up when the query filters on it.
    """
    sql, params, wanted = statement(query, "p.*, " + _LSC_COLUMNS if with_lsc else "p.*", with_lsc=with_lsc)
    rows = tx.query(sql, params)
    if wanted is not None:
        rows = [row for row in rows if row["name"] in wanted]
    return rows


def lsc_view(row: dict) -> dict | None:
    if row.get("lsc_id") is None:
        return None
    return {"serial": row["lsc_serial"], "status": row["lsc_status"], "not_after": row["lsc_not_after"],
            "issued_at": row["lsc_issued_at"], "installed_at": row["lsc_installed_at"]}


def last_session(tx: Transaction, name: str) -> dict | None:
    row = tx.one("SELECT outcome, reason, operation, peer, started_at FROM sessions WHERE UPPER(device_name) = ? "
                 "ORDER BY started_at DESC, id DESC LIMIT 1", (name.upper(),))
    return row


def phone_status(tx: Transaction, name: str) -> dict | None:
    """The CAPF status of one phone: operation, its status, current LSC, last session."""
    rows = select(tx, {"names": [name]})
    if not rows:
        return None
    row = rows[0]
    return {
        "operation": row["operation"], "operation_status": row["operation_status"],
        "operation_reason": row["operation_reason"], "operation_completes_by": row["operation_deadline"],
        "locked": bool(row["locked"]), "authentication_failures": row["auth_failures"],
        "lsc": lsc_view(row), "last_session": last_session(tx, row["name"]),
    }


def check_unmatched(tx: Transaction, names, field: str, *, fail: bool = False) -> tuple[list[str], list[str]]:
    """(unmatched, warnings) for an explicit list of device names: the names no phone in the store
    has (a typo, or a phone not created yet), and a warning naming ``field`` and them. With
    ``fail`` it raises instead, before anything is written."""
    unmatched = phone_records.missing_names(tx, names) if names else []
    if not unmatched:
        return [], []
    shown = ", ".join(unmatched[:UNMATCHED_SHOWN])
    if len(unmatched) > UNMATCHED_SHOWN:
        shown += f" and {len(unmatched) - UNMATCHED_SHOWN} more"
    if fail:
        raise ValidationError(field, f"names {len(unmatched)} device(s) that are not in the store: {shown}; nothing "
                                     "was changed (fail_on_unmatched)")
    return unmatched, [f"{field}: {len(unmatched)} device name(s) not in the store were ignored: {shown}"]

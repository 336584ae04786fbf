# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding phones: the bulk-administration query, shared by bulk jobs, reports and capf_info.

A query is a mapping of filters, all of which must hold: ``names`` (explicit list),
``name_pattern`` (``*``/``?`` wildcards, case-insensitive), ``device_pool``, ``model``,
``security_mode``, ``certificate_operation``, ``operation_status`` and ``lsc_status`` (each one value
or a list), ``lsc_expires_before`` (date or time, UTC) and ``locked`` (true: only phones locked out
after wrong authentication strings; false: only the others). The store selects the phones together with their
current LSC (the newest LSC that is not stale) in one statement (``store.phones.matching``). An LSC's
status is as it is at the moment of the read: ``expired`` once an issued or installed LSC's notAfter has
passed (``store.certificates.reported_status``), in what a query matches and in what a view shows.
"""

from __future__ import annotations

from typing import Any

from .errors import ValidationError
from .store import phones, sessions
from .store.backend import Transaction
from .vocabulary import (CERTIFICATE_STATUSES, OPERATION_STATUSES, OPERATIONS, SECURITY_MODES, check_bool,
                         check_choice, format_utc, normalise_device_name, parse_utc, parse_utc_before, utc_now)

UNMATCHED_SHOWN = 20
QUERY_FIELDS = ("names", "name_pattern", "device_pool", "model", "security_mode", "certificate_operation",
                "operation_status", "lsc_status", "lsc_expires_before", "locked")
LSC_STATUSES = ("none",) + CERTIFICATE_STATUSES
# Orders of a listing (``device_name``, ``lsc_expiry``), as the store can list them.
ORDERS = tuple(phones.LISTING_ORDERS)


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
    for key, choices in (("security_mode", SECURITY_MODES), ("certificate_operation", OPERATIONS),
                         ("operation_status", OPERATION_STATUSES), ("lsc_status", LSC_STATUSES)):
        values = [check_choice(f"{field}.{key}", item, choices) for item in _as_list(query.get(key))]
        if values:
            result[key] = sorted(set(values))
    if query.get("lsc_expires_before") not in (None, ""):
        result["lsc_expires_before"] = format_utc(parse_utc_before(query["lsc_expires_before"],
                                                                   f"{field}.lsc_expires_before"))
    if query.get("locked") is not None:
        result["locked"] = check_bool(f"{field}.locked", query["locked"])
    return result


def select(tx: Transaction, query: dict | None, *, with_lsc: bool = True, now=None,
           clock_skew=phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """Phones matching a (validated) query, by name, with their current LSC columns, its status as it
    is at ``now`` (default: the current time); a query on ``operation_status`` matches the status views
    report then on a store whose clock skew is ``clock_skew`` (``Store.clock_skew``).

    ``with_lsc=False`` returns the phone columns only (a bulk job needs no more); the current LSC is
    still looked up when the query filters on it.
    """
    return phones.matching(tx, query, with_lsc=with_lsc, now=format_utc(parse_utc(now, "now")), clock_skew=clock_skew)


def lsc_view(row: dict) -> dict | None:
    if row.get("lsc_id") is None:
        return None
    return {"serial": row["lsc_serial"], "status": row["lsc_status"], "not_after": row["lsc_not_after"],
            "issued_at": row["lsc_issued_at"], "installed_at": row["lsc_installed_at"]}


def phone_status(tx: Transaction, name: str, now=None, *, clock_skew=phones.NO_CLOCK_SKEW) -> dict | None:
    """The CAPF status of one phone: operation, its status, current LSC (as it is at ``now``, default:
    the current time, on a store whose clock skew is ``clock_skew``), last session."""
    rows = select(tx, {"names": [name]}, now=now, clock_skew=clock_skew)
    if not rows:
        return None
    row = rows[0]
    return status_view(row, lsc_view(row), sessions.last_for_device(tx, row["name"]), now=now, clock_skew=clock_skew)


def status_view(row: dict, lsc: dict | None, last_session: dict | None, *, now=None,
                clock_skew=phones.NO_CLOCK_SKEW) -> dict:
    """The CAPF status of the phone whose row is ``row`` (stored, or planned by a converge), with its
    current LSC and last session; its operation as it is at ``now`` (default: the current time) on a
    store whose clock skew is ``clock_skew`` (``Store.clock_skew``): lapsed once its deadline has passed,
    failed once the session that left it in progress surely ended (``phones.reported_operation``)."""
    status, reason = phones.reported_operation(row, format_utc(parse_utc(now, "now") or utc_now()), clock_skew)
    return {
        "operation": row["operation"], "operation_status": status,
        "operation_reason": reason, "operation_completes_by": row["operation_deadline"],
        "locked": bool(row["locked"]), "authentication_failures": row["auth_failures"],
        "lsc": lsc, "last_session": last_session,
    }


def check_unmatched(tx: Transaction, names, field: str, *, fail: bool = False) -> tuple[list[str], list[str]]:
    """(unmatched, warnings) for an explicit list of device names: the names no phone in the store
    has (a typo, or a phone not created yet), and a warning naming ``field`` and them. With
    ``fail`` it raises instead, before anything is written."""
    unmatched = phones.missing_names(tx, names) if names else []
    if not unmatched:
        return [], []
    shown = ", ".join(unmatched[:UNMATCHED_SHOWN])
    if len(unmatched) > UNMATCHED_SHOWN:
        shown += f" and {len(unmatched) - UNMATCHED_SHOWN} more"
    if fail:
        raise ValidationError(field, f"names {len(unmatched)} device(s) that are not in the store: {shown}; nothing "
                                     "was changed (fail_on_unmatched)")
    return unmatched, [f"{field}: {len(unmatched)} device name(s) not in the store were ignored: {shown}"]

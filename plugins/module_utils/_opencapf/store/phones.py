# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phones and their CAPF settings as stored (names canonical upper case)."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterator

from ..vocabulary import LIVENESS_MARGIN_SECONDS, MAX_SESSION_SECONDS, format_utc, parse_utc, utc_now
from . import audit, certificates
from .backend import Transaction

# Columns an administrator sets; the rest is kept by the engine.
SETTINGS = (
    "description", "model", "device_pool", "security_mode", "operation", "auth_mode",
    "key_order", "rsa_key_size", "ec_key_size", "operation_deadline",
)


def get(tx: Transaction, name: str) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM phones WHERE name = ?", (name.upper(),))


# What a session reads again of its phone's current row in its later transactions (the LSC's
# issuance, the session's end): the row's identity, the operation the session runs and whether
# anybody changed it since the session's first read (``updated_at``), and the name its records carry.
# Each column of a row read costs (the sqlite3 module makes an object of each, releasing the GIL
# around each), and a phone has over twenty: these reads take only these.
# Also the bound of the sessions that put the operation in progress and their start (``record_session_start``:
# the sessions of a reconnecting phone that may be live at once): a session that finds the operation in
# progress tells one no process serves any more (``is_left_abandoned``) from another session's, still live.
SESSION_COLUMNS = ("id", "name", "incarnation", "operation", "operation_status", "updated_at",
                   "operation_live_until", "last_session_at")
_GET_FOR_SESSION = "SELECT %s FROM phones WHERE name = ?" % ", ".join(SESSION_COLUMNS)
# For the session's end, also how many key requests of the phone are ``pending``: those a success the end
# records supersedes (``csrs.supersede_at_success``), asked with the row rather than apart, as there are
# none in almost every session's end; a seek in the index ``csrs_phone_status``.
_GET_FOR_SESSION_END = ("SELECT %s, (SELECT count(*) FROM csrs r WHERE r.phone_id = phones.id AND r.status = 'pending') "
                        "AS pending_requests FROM phones WHERE name = ?" % ", ".join(SESSION_COLUMNS))


def get_for_session(tx: Transaction, name: str, *, at_end: bool = False) -> dict[str, Any] | None:
    """The phone's current row, ``SESSION_COLUMNS`` only; ``at_end``: with ``pending_requests`` too."""
    return tx.one(_GET_FOR_SESSION_END if at_end else _GET_FOR_SESSION, (name.upper(),))


def update_many(tx: Transaction, columns, rows) -> None:
    """Update many phones with one statement; each row holds the values of ``columns``, then
    ``updated_at`` and the phone's id."""
    tx.executemany("UPDATE phones SET %s, updated_at = ? WHERE id = ?" % ", ".join(f"{c} = ?" for c in columns), rows)


def insert_many(tx: Transaction, columns, rows) -> None:
    """Insert many phones with one statement; each row holds the name, ``created_at``, ``updated_at``,
    then the values of ``columns``."""
    tx.executemany("INSERT INTO phones (name, created_at, updated_at, %s) VALUES (?, ?, ?, %s)" % (
        ", ".join(columns), ", ".join("?" * len(columns))), rows)


def delete(tx: Transaction, actor: str, name: str, *, via: str | None = None) -> bool:
    """Remove a phone with its certificates and CSRs (cascade); audited (with ``via``, the path that
    asked, as ``phone.create``/``phone.update`` are). Its LSCs still valid are revoked first
    (cessation of operation: CAPF no longer manages them), and every revoked one is kept in
    ``removed_phone_lscs``, so the CRL goes on listing it."""
    phone = get(tx, name)
    path = {} if via is None else {"via": via}
    if phone is not None:
        certificates.revoke_installed(tx, actor, phone, statuses=("installed", "issued"), **path)
        certificates.keep_revoked_of_removed_phone(tx, phone)
    removed = tx.execute("DELETE FROM phones WHERE name = ?", (name.upper(),)) > 0
    if removed:
        audit.record(tx, actor, "phone.delete", name.upper(), **path)
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


# An operation that can no longer run: declared, waiting for its first session (``pending``) or for
# another attempt (``failed``), and its deadline (``operation_completes_by``) has passed at the moment
# that is the condition's one parameter. A phone's session refuses it from that moment; the scheduler
# records it as ``lapsed`` at its next round (``lapse_overdue``), and every view reports it as lapsed
# from that moment, whether or not the scheduler has run since (``reported_operation_status``). An
# operation in progress is not while its session may be live: begun in time, it may still complete it
# (one whose session surely ended is settled ``failed`` first: ``left_abandoned``).
OVERDUE_STATUSES = ("pending", "failed")
LAPSED_REASON = "deadline passed"
LAPSED_EVENT = "phone.operation_lapsed"  # as ``set_operation_result`` names an operation's result


def _deadline_passed(alias: str) -> str:
    return f"{alias}.operation != 'none' AND {alias}.operation_deadline IS NOT NULL AND {alias}.operation_deadline < ?"


def overdue(alias: str) -> str:
    statuses = ", ".join(f"'{status}'" for status in OVERDUE_STATUSES)
    return f"{alias}.operation_status IN ({statuses}) AND {_deadline_passed(alias)}"


# An operation left ``in_progress`` by a session that no process serves any more (its process died:
# SIGKILL, power loss): the session's ``operation_live_until`` (its time bound plus
# ``LIVENESS_MARGIN_SECONDS``, by the clock of the node that served it) has passed by more than the
# store's clock skew (``Store.clock_skew``: another node's clock may run behind this one's by that much).
# A session from before sessions recorded that bound (NULL) is judged by its start and the longest
# bound there can be. The scheduler settles it as the session's end would have, aborted: ``failed``
# with ``ABANDONED_REASON`` (``decider.settle_abandoned``), and the views report it so from that moment
# on, whether or not the scheduler has run since (``reported_operation_status``); once settled it is a
# failed operation, which lapses when its deadline has passed.
ABANDONED_STATUS = "failed"
ABANDONED_REASON = ("session ended without a result: the CAPF service stopped mid-session (no process serves it "
                    "any more; its time bound passed at {bound})")
UNKNOWN_BOUND = "unknown (recorded before sessions had a bound)"
_UNBOUNDED = _dt.timedelta(seconds=MAX_SESSION_SECONDS[1] + LIVENESS_MARGIN_SECONDS)
NO_CLOCK_SKEW = _dt.timedelta(0)


def abandonment_moments(now: str, clock_skew: _dt.timedelta) -> tuple[str, str]:
    """The parameters of ``left_abandoned`` at ``now``: the moment every node's clock has surely
    reached (``now`` less ``clock_skew``), and the start before which a session with no recorded bound
    has surely ended."""
    moment = parse_utc(now, "now") - clock_skew
    return format_utc(moment), format_utc(moment - _UNBOUNDED)


def left_abandoned(alias: str) -> str:
    """The condition of an abandoned operation; its parameters are ``abandonment_moments``."""
    return (f"{alias}.operation_status = 'in_progress' AND ({alias}.operation_live_until < ? "
            f"OR ({alias}.operation_live_until IS NULL AND ({alias}.last_session_at IS NULL "
            f"OR {alias}.last_session_at < ?)))")


def abandoned_reason_sql(alias: str) -> str:
    """``abandoned_reason`` of the row ``alias``, in SQL (no parameter)."""
    before, after = (f"'{part}'" for part in ABANDONED_REASON.replace("'", "''").split("{bound}"))
    return f"{before} || COALESCE({alias}.operation_live_until, '{UNKNOWN_BOUND}') || {after}"


def abandoned_reason(phone: dict[str, Any]) -> str:
    """The reason an abandoned operation is settled with: when its session's bound passed."""
    return ABANDONED_REASON.format(bound=phone.get("operation_live_until") or UNKNOWN_BOUND)


def lapses(alias: str) -> str:
    """An operation lapsed as read (the scheduler's lapse duty records it so, after ``settle_abandoned``):
    overdue, or abandoned (settled ``failed``, which is overdue too) with its deadline passed. Parameters:
    the moment, then ``abandonment_moments``."""
    statuses = ", ".join(f"'{status}'" for status in OVERDUE_STATUSES)
    return f"{_deadline_passed(alias)} AND ({alias}.operation_status IN ({statuses}) OR ({left_abandoned(alias)}))"


def reported_parameters(now: str, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> tuple[str, ...]:
    """The parameters of ``reported_operation_status`` (and of its reason) read at ``now`` on a store
    whose clock skew is ``clock_skew``."""
    settled_before, unbounded_before = abandonment_moments(now, clock_skew)
    return (now, settled_before, unbounded_before, settled_before, unbounded_before)


def reported_operation_status(alias: str) -> str:
    """A phone row's operation status as views report it at a moment: what the scheduler's duties
    (``settle_abandoned``, then ``lapse_overdue``) would record if they ran then. Its parameters are
    ``reported_parameters``. A CASE on the row's own columns, cheap enough for a listing of 100,000."""
    return (f"CASE WHEN {lapses(alias)} THEN 'lapsed' WHEN {left_abandoned(alias)} THEN '{ABANDONED_STATUS}' "
            f"ELSE {alias}.operation_status END")


def reported_operation_reason(alias: str) -> str:
    """The reason that goes with ``reported_operation_status`` (the same parameters)."""
    return (f"CASE WHEN {lapses(alias)} THEN '{LAPSED_REASON}' WHEN {left_abandoned(alias)} "
            f"THEN {abandoned_reason_sql(alias)} ELSE {alias}.operation_reason END")


def _is_abandoned(row: dict[str, Any], settled_before: str, unbounded_before: str) -> bool:
    if row["operation_status"] != "in_progress":
        return False
    # Read strictly: a row without these columns cannot tell a live session from a dead one.
    live_until = row["operation_live_until"]
    if live_until is not None:
        return live_until < settled_before
    started = row["last_session_at"]
    return started is None or started < unbounded_before


def is_left_abandoned(row: dict[str, Any], now: str, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> bool:
    """Whether a phone row's operation is abandoned at ``now`` (``left_abandoned``, for a row already read)."""
    return _is_abandoned(row, *abandonment_moments(now, clock_skew))


def reported_operation(row: dict[str, Any], now: str, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> tuple[str, str]:
    """``(operation_status, operation_reason)`` of a phone row (stored, or planned by a converge) as
    views report them at ``now`` on a store whose clock skew is ``clock_skew``: the same rule as
    ``reported_operation_status``, for a row already read."""
    status, reason = row["operation_status"], row["operation_reason"]
    if _is_abandoned(row, *abandonment_moments(now, clock_skew)):
        status, reason = ABANDONED_STATUS, abandoned_reason(row)
    if (status in OVERDUE_STATUSES and row["operation"] != "none"
            and row["operation_deadline"] is not None and row["operation_deadline"] < now):
        return "lapsed", LAPSED_REASON
    return status, reason


_LAPSE = "UPDATE phones SET operation_status = 'lapsed', operation_reason = ?, updated_at = ? WHERE "


def operation_event(name: str, operation: str, status: str, reason: str, **details: Any) -> tuple[str, str, dict[str, Any]]:
    """The audit event of a change of a phone's operation status, ``(action, subject, details)``:
    ``phone.operation_<status>`` with the ``operation`` and the ``reason`` (and ``details``), the one
    shape whoever records it (a session's result or end, a failed authentication, the scheduler settling
    an abandoned session or a lapse, the online CA's refusal, the offline import)."""
    return f"phone.operation_{status}", name, {"operation": operation, "reason": reason, **details}


def lapsed_event(name: str, operation: str) -> tuple[str, str, dict[str, Any]]:
    """The audit event of a lapse, ``(action, subject, details)``: one per phone, the same whoever records
    it (the scheduler's lapse duty, a session refused as the deadline passed, which adds its session)."""
    return operation_event(name, operation, "lapsed", LAPSED_REASON)


def lapse_overdue(tx: Transaction, now: str) -> list[dict[str, Any]]:
    """Operations overdue at ``now`` (``overdue``) become ``lapsed`` with ``LAPSED_REASON`` (the scheduler's
    lapse duty); their phones (id, name, operation)."""
    lapsed = tx.query(f"SELECT id, name, operation FROM phones WHERE {overdue('phones')} ORDER BY name", (now,))
    if lapsed:
        tx.execute(_LAPSE + overdue("phones"), (LAPSED_REASON, now, now))
    return lapsed


def lapse_if_overdue(tx: Transaction, now: str, phone_id: int) -> bool:
    """The operation of the phone ``phone_id`` becomes ``lapsed`` if it is overdue at ``now``, as the
    scheduler's lapse duty records it (a session of the phone refused as its deadline passed): one shape
    for a lapse, whoever records it, the one every view reports. Whether it was."""
    return tx.execute(_LAPSE + f"id = ? AND {overdue('phones')}", (LAPSED_REASON, now, phone_id, now)) > 0


# -- finding and listing phones by a bulk-administration query (``phone_query.check_query``) ------

_IN_LIMIT = 500
# A phone's current LSC (``certificates.CURRENT_LSC``). Both lookups are seeks in the index
# certificates_current_lsc, which holds every column a listing shows, so no certificate row (each with
# its PEM) is read.
_FROM_WITH_LSC = " FROM phones p LEFT JOIN certificates l ON l.phone_id = p.id AND " + certificates.CURRENT_LSC
# The current LSC's status as the listing reads it: ``expired`` once its notAfter has passed at the
# moment of the read, which is the expression's one parameter (``certificates.reported_status``).
_LSC_STATUS = certificates.reported_status("l")
_LSC_COLUMNS = (f"l.id AS lsc_id, l.serial AS lsc_serial, {_LSC_STATUS} AS lsc_status, l.not_after AS lsc_not_after, "
                "l.issued_at AS lsc_issued_at, l.installed_at AS lsc_installed_at")
# Orders of a listing. By LSC expiry, phones without a current LSC come first (they need one most;
# said explicitly, as PostgreSQL sorts NULLs last by default).
LISTING_ORDERS = {"device_name": "p.name", "lsc_expiry": "l.not_after NULLS FIRST, p.name"}
# The columns of a listing's rows. Each column of each row costs a round trip through the sqlite3
# module (it releases the GIL around every column it reads), so a listing selects no column it does
# not return: a phone has a current LSC exactly when its (never NULL) serial is there.
_LISTED = ("p.name", "p.description", "p.model", "p.device_pool", "p.security_mode", "p.operation",
           reported_operation_status("p"), reported_operation_reason("p"), "p.auth_mode", "p.operation_deadline", "p.locked", "l.serial",
           _LSC_STATUS, "l.not_after", "l.issued_at", "l.installed_at")
LISTING_COLUMNS = ", ".join(_LISTED)
LISTING_WIDTH = len(_LISTED)


def _listing_parameters(now: str, clock_skew: _dt.timedelta) -> list:
    """The parameters of ``LISTING_COLUMNS`` at ``now``, in the order of the columns."""
    reported = reported_parameters(now, clock_skew)
    return [*reported, *reported, now]


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _matching_statement(query: dict | None, columns: str, column_parameters, *, now: str | None,
                        clock_skew: _dt.timedelta, with_lsc: bool = True,
                        order: str = "device_name") -> tuple[str, list, set | None]:
    """The SQL selecting ``columns`` (of ``p``, and ``l`` with ``with_lsc``) of the phones that match
    a validated query, in ``order``, the statuses as they are at ``now`` (default: this second) on a
    store whose clock skew is ``clock_skew``; its parameters; and the names to keep when the query names
    more phones than one statement can list (None: keep every row). ``column_parameters(now,
    clock_skew)`` gives the parameters of ``columns``: the moment of the statuses they report."""
    query = query or {}
    now = now or format_utc(utc_now())
    with_lsc = with_lsc or order != "device_name" or bool(query.get("lsc_status") or query.get("lsc_expires_before"))
    where, params = [], list(column_parameters(now, clock_skew))
    names = query.get("names") or []
    if names and len(names) <= _IN_LIMIT:
        where.append("p.name IN (%s)" % ", ".join("?" * len(names)))
        params.extend(names)
    if query.get("name_pattern"):
        where.append("p.name LIKE ? ESCAPE '\\'")
        params.append(_like(query["name_pattern"]))
    for key, column in (("device_pool", "device_pool"), ("model", "model"), ("security_mode", "security_mode"),
                        ("certificate_operation", "operation")):
        if query.get(key):
            where.append(f"p.{column} IN (%s)" % ", ".join("?" * len(query[key])))
            params.extend(query[key])
    if query.get("operation_status"):  # as the views report it at ``now``
        where.append(f"{reported_operation_status('p')} IN (%s)" % ", ".join("?" * len(query["operation_status"])))
        params.extend([*reported_parameters(now, clock_skew), *query["operation_status"]])
    if query.get("locked") is not None:
        where.append("p.locked = ?")
        params.append(1 if query["locked"] else 0)
    if query.get("lsc_status"):
        statuses = [s for s in query["lsc_status"] if s != "none"]
        parts = []
        if statuses:
            parts.append(f"{_LSC_STATUS} IN (%s)" % ", ".join("?" * len(statuses)))
            params.extend([now, *statuses])
        if "none" in query["lsc_status"]:
            parts.append("l.id IS NULL")
        where.append("(" + " OR ".join(parts) + ")")
    if query.get("lsc_expires_before"):
        where.append("l.not_after < ?")
        params.append(query["lsc_expires_before"])
    sql = f"SELECT {columns}" + (_FROM_WITH_LSC if with_lsc else " FROM phones p")
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY " + LISTING_ORDERS[order]
    return sql, params, set(names) if names and len(names) > _IN_LIMIT else None


def matching(tx: Transaction, query: dict | None, *, with_lsc: bool = True, now: str | None = None,
             clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """Phone rows matching a validated query, by name, with their current LSC's columns (``lsc_id``,
    ``lsc_serial``, ``lsc_status`` as it is at ``now`` ...); ``with_lsc=False``: the phone columns only.
    The rows are as stored: a query on ``operation_status`` matches the status views report at ``now``
    on a store whose clock skew is ``clock_skew``."""
    if with_lsc:
        sql, params, wanted = _matching_statement(query, "p.*, " + _LSC_COLUMNS, lambda moment, _skew: [moment], now=now,
                                                  clock_skew=clock_skew, with_lsc=True)
    else:
        sql, params, wanted = _matching_statement(query, "p.*", lambda _moment, _skew: [], now=now,
                                                  clock_skew=clock_skew, with_lsc=False)
    rows = tx.query(sql, params)
    if wanted is not None:
        rows = [row for row in rows if row["name"] in wanted]
    return rows


def listing_statement(query: dict | None, *, order: str = "device_name", with_auth: bool = False,
                      now: str | None = None, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> tuple[str, list, set | None]:
    """The statement ``listing`` runs: its SQL, its parameters, and the names it keeps (None: every row)."""
    columns = LISTING_COLUMNS + (", p.auth_salt, p.auth_hash" if with_auth else "")
    return _matching_statement(query, columns, _listing_parameters, now=now, clock_skew=clock_skew, with_lsc=True,
                               order=order)


def listing(tx: Transaction, query: dict | None, *, order: str = "device_name", with_auth: bool = False,
            now: str | None = None, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> Iterator[tuple]:
    """The phones matching a validated query in ``order`` (a key of ``LISTING_ORDERS``), as tuples of
    ``LISTING_COLUMNS`` (then ``auth_salt`` and ``auth_hash`` with ``with_auth``), streamed; the
    statuses are as they are at ``now`` (default: this second) on a store whose clock skew is
    ``clock_skew`` (``Store.clock_skew``; default: none, as on one host's store)."""
    sql, params, wanted = listing_statement(query, order=order, with_auth=with_auth, now=now, clock_skew=clock_skew)
    rows = tx.rows(sql, params)
    return rows if wanted is None else (row for row in rows if row[0] in wanted)


def set_operation_result(tx: Transaction, actor: str, phone: dict[str, Any], status: str, reason: str = "",
                         *, clear_operation: bool = False, **details: Any) -> None:
    """Record how the phone's pending operation went; ``clear_operation`` sets it back to ``none``."""
    now = format_utc(utc_now())
    operation = "none" if clear_operation else phone["operation"]
    tx.execute(
        "UPDATE phones SET operation = ?, operation_status = ?, operation_reason = ?, updated_at = ? WHERE id = ?",
        (operation, status, reason, now, phone["id"]),
    )
    action, subject, event_details = operation_event(phone["name"], phone["operation"], status, reason, **details)
    audit.record(tx, actor, action, subject, **event_details)


# What an event outside the run of an operation may record of it: a session's failed authentication (a
# wrong or missing string, a certificate refused) fails only the operation that session would run, and the
# online CA's refusal of a request only the operation that waits for it. Either fails the operation only
# while it waits for a session (``waits_for_a_session``): ``pending``, declared and not yet tried or
# deferred while a CA holds its request. A result recorded (``succeeded``, ``failed``, ``lapsed``), no
# operation, and an operation ``in_progress`` are not such an event's to change: the phone's LSC is still
# installed after a wrong string, and an operation in progress belongs to the session running it (which
# may be live: its end settles it; or abandoned: the scheduler settles it). The failed authentication
# still counts toward the lock-out.


def waits_for_a_session(row: dict[str, Any]) -> bool:
    """Whether a phone row's operation waits for the session that will run it (``pending``): the only
    state an authentication failure or a CA's refusal of the request it waits for fails."""
    return row["operation"] != "none" and row["operation_status"] == "pending"


def fails_at_authentication(row: dict[str, Any], operation: str) -> bool:
    """Whether a session that would run ``operation`` (``decider.pending_operation`` as it began) fails
    the operation of the phone row read now when its authentication fails: the rule above."""
    return waits_for_a_session(row) and row["operation"] == operation


def record_auth_failure(tx: Transaction, actor: str, phone: dict[str, Any], lockout_failures: int,
                        reason: str, *, operation: str, **details: Any) -> tuple[int, bool]:
    """Count one failed authentication of a session that would run ``operation``; lock the phone at
    ``lockout_failures``. The operation becomes ``failed`` with ``reason`` only by the rule of
    ``fails_at_authentication``, with its ``phone.operation_failed`` audit event (``operation_event``,
    ``details`` added) after the ``phone.auth_failed`` one, both in one statement. Returns (failures, locked)."""
    failures = int(phone["auth_failures"]) + 1
    locked = failures >= lockout_failures
    counted = (failures, int(locked or bool(phone["locked"])))
    fails = fails_at_authentication(phone, operation)
    if fails:
        tx.execute("UPDATE phones SET auth_failures = ?, locked = ?, operation_status = 'failed', operation_reason = ?, "
                   "updated_at = ? WHERE id = ?", (*counted, reason, format_utc(utc_now()), phone["id"]))
    else:
        tx.execute("UPDATE phones SET auth_failures = ?, locked = ?, updated_at = ? WHERE id = ?",
                   (*counted, format_utc(utc_now()), phone["id"]))
    with audit.batched(tx):
        audit.record(tx, actor, "phone.auth_failed", phone["name"], failures=failures, locked=locked, reason=reason)
        if fails:
            action, subject, event_details = operation_event(phone["name"], phone["operation"], "failed", reason,
                                                             **details)
            audit.record(tx, actor, action, subject, **event_details)
    return failures, locked


def reset_auth_failures(tx: Transaction, phone: dict[str, Any]) -> None:
    """A right authentication string: the count of failed attempts starts again from 0."""
    tx.execute("UPDATE phones SET auth_failures = 0 WHERE id = ?", (phone["id"],))


def may_be_live(row: dict[str, Any], now: str, clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> bool:
    """Whether a phone row's operation is in progress in a session that may still be live at ``now``:
    ``in_progress`` and not abandoned (``is_left_abandoned``). The sessions of a reconnecting phone
    overlap: one that begins then joins that session's, whose end it cannot see."""
    return row["operation_status"] == "in_progress" and not is_left_abandoned(row, now, clock_skew)


def record_session_start(tx: Transaction, phone: dict[str, Any], operation_pending: bool,
                         live_until: str | None = None, *, now: str | None = None,
                         clock_skew: _dt.timedelta = NO_CLOCK_SKEW) -> bool:
    """An authenticated session: reset the failure count and mark a pending operation in progress
    until ``live_until`` at the latest (when the session has ended, whatever happens to it). Returns
    whether the session joins another one of the phone that may still be live (``may_be_live`` of
    ``phone``, the row read in ``tx``, at ``now``).

    ``last_session_at`` and ``operation_live_until`` span every session of the phone that may still be
    live: a session that joins one keeps its start and extends its bound to its own, so the key requests
    of each, should its process die, are settled with the operation once the last bound has passed
    (``left_abandoned``, ``csrs.reported_status``); a session that took them for its own would leave
    those of the other waiting for good.

    A finished operation (succeeded, lapsed) stays as it is: the phone is only checking in, for
    example again after a crash of the service cost it the END_SESSION of the session that succeeded.
    """
    moment = now or format_utc(utc_now())
    joins = may_be_live(phone, moment, clock_skew)
    if operation_pending:
        started, bound = moment, live_until
        if joins:
            started = phone["last_session_at"]
            # A bound none was recorded for (an older engine's session) is judged by its start.
            bound = phone["operation_live_until"] and live_until and max(phone["operation_live_until"], live_until)
        tx.execute("UPDATE phones SET auth_failures = 0, operation_status = 'in_progress', last_session_at = ?, "
                   "operation_live_until = ? WHERE id = ?", (started, bound, phone["id"]))
    elif joins:
        tx.execute("UPDATE phones SET auth_failures = 0 WHERE id = ?", (phone["id"],))
    else:
        tx.execute("UPDATE phones SET auth_failures = 0, last_session_at = ? WHERE id = ?", (moment, phone["id"]))
    return joins


def abandoned(tx: Transaction, now: str, clock_skew: _dt.timedelta) -> list[dict[str, Any]]:
    """Phones whose operation is abandoned at ``now`` on a store whose clock skew is ``clock_skew``
    (``left_abandoned``): ``in_progress`` with no live session. By name."""
    return tx.query(f"SELECT * FROM phones WHERE {left_abandoned('phones')} ORDER BY name",
                    abandonment_moments(now, clock_skew))


def locked_count(tx: Transaction) -> int:
    """Phones locked out after repeated wrong authentication strings."""
    return int(tx.scalar("SELECT COUNT(*) FROM phones WHERE locked = 1") or 0)

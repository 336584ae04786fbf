# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only views of the store (what capf_info gathers), the CAPF report (CSV, or HTML through
``report_html``), and the one
clean-up that belongs with them: deleting stale LSCs.

A stale LSC was issued for a CSR but never installed because the phone produced a newer CSR
first, or answered that it did not store it (``utils capf stale-lsc list``); pending CSRs are those still waiting for a signature
(``utils capf csr list``).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
from typing import Any, Iterator

from . import authstrings, monitor, phone_config, phone_query, report_html, revocation, scheduler, service_config, trust
from .ca import authority
from .dependencies import require
from .errors import ValidationError
from .files import write_private_file
from .results import converged
from .store import Store, audit, certificates, csrs, sessions
from .store import phones as phone_records
from .store.backend import Transaction
from .vocabulary import (REPORT_FORMATS, SESSIONS_SHOWN as SESSIONS_SHOWN_RANGE, check_choice, check_int_range, format_utc,
                         normalise_device_name, parse_utc, utc_now)

SESSIONS_SHOWN = 10

SECTIONS = ("service", "capf_certificates", "trust", "phones", "pending_csrs", "stale_lscs", "jobs", "sessions",
            "revoked_lscs", "crl", "expiring_certificates", "monitor")
REPORT_COLUMNS = ("device_name", "description", "model", "device_pool", "security_mode", "certificate_operation",
                  "operation_status", "authentication_mode", "lsc_status", "lsc_serial", "lsc_not_after",
                  "lsc_installed_at")
MAX_LIMIT = 100000
PHONE_ORDERS = phone_query.ORDERS
# The width of a listed phone's row (``store.phones.LISTING_COLUMNS``); with an authentication
# string its salt and hash follow.
_PHONE_WIDTH = phone_records.LISTING_WIDTH


def phone_rows(tx: Transaction, query: dict | None, *, secret: bytes | None = None,
               authentication_string: str | None = None, order: str = "device_name",
               now=None, clock_skew=phone_records.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """Phones matching a bulk-style query with their CAPF status and current LSC (the statuses as they
    are at ``now``, default: the current time, on a store whose clock skew is ``clock_skew``:
    ``Store.clock_skew``), in ``order`` (``device_name``, or ``lsc_expiry``: soonest
    first, phones without an LSC before all); with ``authentication_string``, only the phones whose
    stored keyed hash matches it.

    Rows are read as tuples straight from the cursor (a listing of 100,000 phones builds each
    phone's dict once, and nothing else)."""
    order = check_choice("order_by", order, PHONE_ORDERS)
    rows = phone_records.listing(tx, query, order=order, with_auth=authentication_string is not None,
                                 now=format_utc(parse_utc(now, "now")), clock_skew=clock_skew)
    if authentication_string is not None:
        rows = _using(rows, secret, authentication_string)
    with _cycle_collector_paused():
        return [{
            "device_name": name, "description": description, "model": model, "device_pool": pool,
            "security_mode": security_mode, "certificate_operation": operation, "operation_status": status,
            "operation_reason": reason, "authentication_mode": auth_mode, "operation_completes_by": deadline,
            "locked": bool(locked),
            "lsc": None if serial is None else {"serial": serial, "status": lsc_status, "not_after": not_after,
                                                "issued_at": issued_at, "installed_at": installed_at},
        } for (name, description, model, pool, security_mode, operation, status, reason, auth_mode, deadline, locked,
               serial, lsc_status, not_after, issued_at, installed_at) in rows]


def _using(rows: Iterator[tuple], secret: bytes | None, authentication_string: str) -> Iterator[tuple]:
    """The rows whose stored hash matches ``authentication_string``, each cut to the listing's columns."""
    for row in rows:
        if authstrings.matches(secret, row[_PHONE_WIDTH], row[_PHONE_WIDTH + 1], authentication_string):
            yield row[:_PHONE_WIDTH]


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a listing builds its dicts. They hold no cycles, yet
    each few thousand of them would start a collection, and every collection of the oldest
    generation walks all live objects (the listing so far, and whatever the caller still holds): a
    fifth of the time of a 100,000-phone listing. Left disabled when it was disabled already."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def phone_detail(store: Store, name: str, *, sessions_limit: int = SESSIONS_SHOWN,
                 now=None) -> dict[str, Any] | None:
    """Everything about one phone an operator asks first, in one read transaction: its settings, its
    operation with status and reason, its current LSC (its status as it is at ``now``, default: the
    current time), lock-out, its newest sessions with their reasons and its CSRs waiting for a
    signature; None when the store has no such phone."""
    name = normalise_device_name(name, "name")
    sessions_limit = check_int_range("sessions", sessions_limit, SESSIONS_SHOWN_RANGE)
    with store.read() as tx:
        row = phone_records.get(tx, name)
        if row is None:
            return None
        status = phone_query.phone_status(tx, name, now, clock_skew=store.clock_skew)
        return {
            "device_name": name,
            "settings": phone_config.settings_view(row, now=now, clock_skew=store.clock_skew),
            "operation": {"certificate_operation": status["operation"], "status": status["operation_status"],
                          "reason": status["operation_reason"], "completes_by": status["operation_completes_by"]},
            "lsc": status["lsc"],
            "lockout": {"locked": status["locked"], "authentication_failures": status["authentication_failures"]},
            "sessions": [{key: session[key] for key in ("started_at", "peer", "operation", "outcome", "reason",
                                                        "duration_ms")}
                         for session in sessions.recent(tx, name, sessions_limit)],
            "pending_csrs": csrs.awaiting_signature_for(tx, name, now=format_utc(parse_utc(now, "now") or utc_now()),
                                                        clock_skew=store.clock_skew),
        }


def _report_line(phone: dict) -> list:
    lsc = phone["lsc"] or {}
    flat = dict(phone, lsc_status=lsc.get("status", "none"), lsc_serial=lsc.get("serial", ""),
                lsc_not_after=lsc.get("not_after", ""), lsc_installed_at=lsc.get("installed_at") or "")
    return [flat[column] if flat[column] is not None else "" for column in REPORT_COLUMNS]


def report_csv(phones: list[dict]) -> bytes:
    """The CAPF report: one line per phone with its LSC status."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for phone in phones:
        writer.writerow(_report_line(phone))
    return buffer.getvalue().encode("utf-8")


def report_page(phones: list[dict], *, stale_lscs: list[dict], pending_csrs: list[dict],
                query: dict | None = None, generated_at: str | None = None) -> bytes:
    """The CAPF report as one self-contained HTML page (charts, summary, sortable device table)."""
    return report_html.render(report_html.context(
        phones, stale_lscs=stale_lscs, pending_csrs=pending_csrs, query=query,
        generated_at=generated_at or format_utc(utc_now())))


def gather(store: Store, sections=None, *, query: dict | None = None, limit: int = 100,
           report_path: str | None = None, authentication_string: str | None = None,
           order_by: str = "device_name", report_format: str = "csv", now=None) -> dict[str, Any]:
    """Everything capf_info returns, one read transaction (plus the CAPF certificate summaries).
    ``authentication_string`` narrows the phones to those that use it (never echoed); ``order_by``
    orders the phones and the report (``device_name`` or ``lsc_expiry``); ``report_format`` is
    ``csv`` or ``html``. The phones' LSC statuses, and the HTML report's time, are those of ``now``
    (default: the current time)."""
    sections = list(sections or SECTIONS)
    for index, section in enumerate(sections):
        check_choice(f"gather[{index}]", section, SECTIONS)
    limit = check_int_range("limit", limit, (1, MAX_LIMIT))
    order_by = check_choice("order_by", order_by, PHONE_ORDERS)
    report_format = check_choice("report_format", report_format, REPORT_FORMATS)
    canonical = phone_query.check_query(query)
    moment = parse_utc(now, "now") if now is not None else utc_now()
    html = bool(report_path) and report_format == "html"
    if html:
        require("Jinja2")  # before anything is read, so a missing library fails the call at once
    if authentication_string is not None:
        authstrings.check_auth_string(authentication_string)
    result: dict[str, Any] = {}
    with store.read() as tx:
        if "service" in sections:
            result["service"] = service_config.plan(tx, b"").before
        if "trust" in sections:
            result["trust"] = {name: trust.list_certificates(tx, name) for name in ("capf-trust", "callmanager-trust")}
        if "phones" in sections or report_path:
            phones = phone_rows(tx, canonical, secret=store.secret() if authentication_string is not None else None,
                                authentication_string=authentication_string, order=order_by, now=moment,
                                clock_skew=store.clock_skew)
            if "phones" in sections:
                result["phones"] = phones
        if "pending_csrs" in sections or html:
            pending = csrs.awaiting_signature(tx, now=format_utc(moment), clock_skew=store.clock_skew)
            if "pending_csrs" in sections:
                result["pending_csrs"] = pending
        if "stale_lscs" in sections or html:
            stale = certificates.stale_lscs(tx)
            if "stale_lscs" in sections:
                result["stale_lscs"] = stale
        if "jobs" in sections:
            result["jobs"] = scheduler.list_jobs(tx, limit=limit)
        if "sessions" in sections:
            result["sessions"] = sessions.newest(tx, limit)
        if "revoked_lscs" in sections:
            result["revoked_lscs"] = certificates.revoked_lscs(tx, newest=limit)
        if "crl" in sections:
            result["crl"] = revocation.crl_overview(store, tx)
        if "expiring_certificates" in sections:
            result["expiring_certificates"] = monitor.expiring_in(tx, moment)
        if "monitor" in sections:
            result["monitor"] = monitor.status(tx)
    if "capf_certificates" in sections:
        history = authority.history(store)
        for item in history:
            item.pop("pem", None)
        result["capf_certificates"] = history
    if report_path:
        if html:
            # The page speaks of the selected phones only: their stale LSCs and pending CSRs.
            selected = {row["device_name"] for row in phones} if canonical or authentication_string else None
            data = report_page(phones, query=canonical, generated_at=format_utc(moment),
                               stale_lscs=[row for row in stale if selected is None or row["device_name"] in selected],
                               pending_csrs=[row for row in pending if selected is None or row["device_name"] in selected])
        else:
            data = report_csv(phones)
        write_private_file(report_path, data)
        result["report_path"] = report_path
    return result


def delete_stale_lscs(store: Store, *, device_names=None, fail_on_unmatched: bool = False,
                      check_mode: bool = False) -> dict[str, Any]:
    """Delete stale LSCs: all of them (``device_names`` None) or those of the named devices. Named
    devices that are not in the store are returned (``unmatched``) with a warning, or with
    ``fail_on_unmatched`` fail the call before anything is deleted."""
    names = None
    if device_names is not None:
        if not isinstance(device_names, (list, tuple)) or not device_names:
            raise ValidationError("devices", "must be a non-empty list of device names", device_names)
        names = sorted({normalise_device_name(name, f"devices[{i}]") for i, name in enumerate(device_names)})
    with store.transaction(write=not check_mode) as tx:
        unmatched, warnings = phone_query.check_unmatched(tx, names, "devices", fail=fail_on_unmatched)
        stale = certificates.stale_lscs(tx, names)
        if stale and not check_mode:
            certificates.delete_if_stale(tx, [row["id"] for row in stale])
            audit.record(tx, store.actor, "certificate.stale_deleted", "stale_lscs", count=len(stale),
                         serials=[row["serial"] for row in stale])
    before = [{"device_name": row["device_name"], "serial": row["serial"], "not_after": row["not_after"]}
              for row in stale]
    return converged(bool(stale), {"stale_lscs": before}, {"stale_lscs": []}, deleted=before, unmatched=unmatched,
                     warnings=warnings)

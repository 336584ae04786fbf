# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``phones list|show``: did a phone get its certificate, and if not, why.

``list`` selects phones with the bulk-administration query that capf_info uses
(``reports.gather``); ``show`` gathers one phone's settings, operation, LSC, lock-out, sessions
and pending CSRs (``reports.phone_detail``). Both print an aligned table, ``--json``, or
(``list``) ``--csv``.
"""

from __future__ import annotations

from .. import reports
from ..errors import CapfError
from ..phone_query import LSC_STATUSES
from ..store import opened
from ..vocabulary import OPERATION_STATUSES, OPERATIONS, SECURITY_MODES
from .options import bounded, limit_help
from .render import cell, csv_text, table

# The columns of a listing, as a table and as CSV (each a key of ``_flat``'s rows).
LIST_COLUMNS = ("device_name", "device_pool", "model", "security_mode", "certificate_operation", "operation_status",
                "operation_reason", "locked", "lsc_status", "lsc_serial", "lsc_not_after")


def register(subparsers) -> None:
    parser = subparsers.add_parser("phones", help="list phones with their CAPF status, or show one phone")
    verbs = parser.add_subparsers(dest="phones_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    listing = verbs.add_parser("list", help="phones matching filters (all given must hold), with their LSC status")
    listing.add_argument("--name", dest="name_pattern", metavar="PATTERN",
                         help="device-name pattern with * and ? wildcards, case-insensitive")
    listing.add_argument("--device-pool", action="append", metavar="POOL", help="device pool (repeatable)")
    listing.add_argument("--model", action="append", help="phone model (repeatable)")
    listing.add_argument("--security-mode", action="append", choices=SECURITY_MODES, help="(repeatable)")
    listing.add_argument("--operation", dest="certificate_operation", action="append", choices=OPERATIONS,
                         help="certificate operation (repeatable)")
    listing.add_argument("--status", dest="operation_status", action="append", choices=OPERATION_STATUSES,
                         help="operation status (repeatable)")
    listing.add_argument("--lsc-status", action="append", choices=LSC_STATUSES,
                         help="status of the current LSC now (expired: issued or installed, past its notAfter); "
                              "none: phones without one (repeatable)")
    listing.add_argument("--expires-before", dest="lsc_expires_before", metavar="DATE",
                         help="current LSC expires before this ISO 8601 date or UTC time")
    locked = listing.add_mutually_exclusive_group()
    locked.add_argument("--locked", action="store_const", const=True, dest="locked",
                        help="only phones locked out after wrong authentication strings")
    locked.add_argument("--not-locked", action="store_const", const=False, dest="locked", help="only the others")
    listing.add_argument("--order-by", choices=reports.PHONE_ORDERS, default="device_name",
                         help="lsc_expiry: soonest-expiring LSC first, phones without one before all")
    listing.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    listing.set_defaults(handler=_list)
    show = verbs.add_parser("show", help="one phone: settings, operation and reason, LSC, lock-out, sessions, CSRs")
    show.add_argument("device_name")
    show.add_argument("--sessions", type=bounded("sessions_shown"), default=reports.SESSIONS_SHOWN, metavar="N",
                      help=f"newest sessions shown ({limit_help('sessions_shown')}, default {reports.SESSIONS_SHOWN})")
    show.set_defaults(handler=_show)


def _query(args) -> dict:
    fields = ("name_pattern", "device_pool", "model", "security_mode", "certificate_operation", "operation_status",
              "lsc_status", "lsc_expires_before", "locked")
    return {field: getattr(args, field) for field in fields if getattr(args, field) is not None}


def _flat(phone: dict) -> dict:
    lsc = phone["lsc"] or {}
    return dict(phone, lsc_status=lsc.get("status", "none"), lsc_serial=lsc.get("serial"),
                lsc_not_after=lsc.get("not_after"))


def _list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        phones = reports.gather(store, ["phones"], query=_query(args), order_by=args.order_by)["phones"]
    if args.csv and not output.as_json:
        output.stream.write(csv_text([_flat(phone) for phone in phones], LIST_COLUMNS))
        return 0
    output.result(phones, table([_flat(phone) for phone in phones], LIST_COLUMNS) + f"\n\n{len(phones)} phone(s)")
    return 0


def _fields(pairs) -> list[str]:
    width = max(len(name) for name, _value in pairs)
    return [f"  {name.ljust(width)}  {cell(value)}".rstrip() for name, value in pairs]


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        detail = reports.phone_detail(store, args.device_name, sessions_limit=args.sessions)
    if detail is None:
        raise CapfError(f"phone {args.device_name.upper()} is not in the store")
    output.result(detail, _show_text(detail))
    return 0


def _show_text(detail: dict) -> str:
    settings = {key: value for key, value in detail["settings"].items() if key not in ("name", "operation_status")}
    operation, lockout, lsc = detail["operation"], detail["lockout"], detail["lsc"]
    lines = [detail["device_name"], "settings"] + _fields(list(settings.items()))
    lines += ["operation"] + _fields(list(operation.items()))
    lines += ["lsc"] + (_fields(list(lsc.items())) if lsc else ["  none"])
    lines += ["lock-out"] + _fields(list(lockout.items()))
    sessions = detail["sessions"]
    lines += ["sessions (newest first)"]
    lines += (["  " + line for line in table(sessions, ("started_at", "peer", "operation", "outcome", "reason"))
               .splitlines()] if sessions else ["  none"])
    csrs = detail["pending_csrs"]
    lines += ["pending CSRs"]
    lines += (["  " + line for line in table(csrs, ("id", "status", "created_at", "external_ref")).splitlines()]
              if csrs else ["  none"])
    return "\n".join(lines)

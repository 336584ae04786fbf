# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``service show``: the service parameters with their values and effective defaults."""

from __future__ import annotations

from .. import parameters
from ..store import opened
from ..store import service as service_records
from .render import cell, table


def register(subparsers) -> None:
    parser = subparsers.add_parser("service", help="show the CAPF service parameters")
    verbs = parser.add_subparsers(dest="service_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    show = verbs.add_parser("show", help="every service parameter: value, default, accepted values, restart needed")
    show.set_defaults(handler=_show)


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store, store.read() as tx:
        rows = parameters.table(service_records.read(tx))
    shown = [dict(row, value=_value(row["value"]), default=_value(row["default"]),
                  restart="restart" if row["restart"] else "") for row in rows]
    output.result(rows, table(shown, ("name", "value", "default", "accepts", "restart")))
    return 0


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(cell, value))
    return cell(value)

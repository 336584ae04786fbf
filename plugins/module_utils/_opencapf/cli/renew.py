# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``renew run``: automatic renewal on demand (the CAPF service runs it on its own as well)."""

from __future__ import annotations

from .. import renewal
from ..store import opened
from .options import clock_or_earlier


def register(subparsers) -> None:
    parser = subparsers.add_parser("renew", help="automatic renewal of LSCs that are about to expire")
    verbs = parser.add_subparsers(dest="renew_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    run = verbs.add_parser("run", help="schedule install_upgrade for the phones whose LSC expires within "
                                       "renew_before_days, at most renew_max_per_day in any 24 hours, unless "
                                       "a new LSC would end no later (it ends with the CAPF certificate)")
    not_ahead = clock_or_earlier("schedule renewals not yet due and record them as scheduled then")
    run.add_argument("--now", metavar="TIME", type=not_ahead,
                     help="run as at this UTC time (ISO 8601), not later than this host's clock (the renewals are "
                          "recorded as scheduled then; only LSCs issued by then are candidates, and the 24-hour "
                          "bound holds for every 24 hours around it); default: now")
    run.set_defaults(handler=_run)


def _run(args, output) -> int:
    with opened(args.store, actor="scheduler", create=False) as store:
        result = renewal.run(store, args.now)
    if not result["enabled"]:
        text = "automatic renewal is off (the renew_before_days service parameter is 0)"
    else:
        names = [item["name"] for item in result["scheduled"]]
        text = (f"install_upgrade scheduled for {len(names)} phone(s): {', '.join(names)}" if names
                else f"no renewal scheduled at {result['at']}")
        if result["more_due"]:
            text += f"\nmore phones are due; {result['left_today']} more may be scheduled in the 24 hours before " \
                    f"{result['at']} (renew_max_per_day)"
        held = result["held_back"]
        if held["count"]:
            text += f"\n{held['count']} phone(s) held back, waiting for a CAPF certificate that outlives their LSC " \
                    f"(the active one ends at {held['capf_not_after']}; regenerate or replace it): " \
                    f"{', '.join(held['names'])}{' ...' if held['count'] > len(held['names']) else ''}"
    output.result(result, text)
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``monitor run|show``: the certificate monitor on demand, and what it found and did last.

``monitor run`` takes the monitor's lead (``Store.try_lead(monitor.LEAD)``, as the service's scheduler
does), so that a check on demand never mails what the service mails: while another process leads
(a running service), it says so in one line and exits with ``LEAD_HELD`` without checking."""

from __future__ import annotations

from .. import monitor
from ..store import opened
from .options import clock_or_earlier

LEAD_HELD = 3  # exit status of 'monitor run' while another process leads the monitor


def register(subparsers) -> None:
    parser = subparsers.add_parser("monitor", help="check certificate expiry now, or show the monitor's last run")
    verbs = parser.add_subparsers(dest="monitor_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    run = verbs.add_parser("run", help=("check every certificate now and send the warning mail that is due "
                                        "(exits 3, checking nothing, while a running service leads the monitor)"))
    not_ahead = clock_or_earlier("record a check that has not happened and mail day counts that are not yet true")
    run.add_argument("--now", metavar="TIME", type=not_ahead,
                     help="check as at this UTC time (ISO 8601), not later than this host's clock (the check is "
                          "recorded and mailed as of that time); default: now")
    run.set_defaults(handler=_run)
    show = verbs.add_parser("show", help="the certificates within the warn window and the monitor's last run")
    show.add_argument("--now", metavar="TIME",
                      help="show the warn window as at this UTC time (ISO 8601), earlier or later: 'monitor show' "
                           "only reads; default: now")
    show.set_defaults(handler=_show)


def _run(args, output) -> int:
    with opened(args.store, actor="monitor", create=False) as store:
        if not store.try_lead(monitor.LEAD):
            with store.read() as tx:
                next_check = monitor.status(tx)["next_check"]
            output.error(f"monitor run: another process leads the certificate monitor of this store (the running CAPF "
                         f"service, or another 'monitor run') and checks itself (next check: "
                         f"{next_check or 'at its next tick'}); nothing was checked or sent: see 'monitor show'")
            return LEAD_HELD
        with store.leading(monitor.LEAD):  # each of its writes under the lead it took
            result = monitor.check(store, args.now)
    lines = [f"{result['checked_at']}: {result['result']}; {result['found']} certificate(s) within the warn window, "
             f"{result['warnings']} warning(s) due, {result['mails_sent']} mail(s) sent"]
    if result["error"]:
        lines.append(f"error after {result['attempts']} attempt(s): {result['error']}")
    lines += [f"  {item['not_after']}  {item['days_left']:>5} days  {item['kind']:<18} {item['subject']}"
              for item in result["certificates"]]
    output.result(result, "\n".join(lines))
    return 1 if result["result"] in ("failed", "unknown") else 0


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        expiring = monitor.expiring(store, args.now)
        with store.read() as tx:
            state = monitor.status(tx)
    result = {"expiring_certificates": expiring, "monitor": state}
    last = state["last_run"]
    lines = ["last run: never" if last is None else
             f"last run: {last['checked_at']} {last['result']}, {last['warnings']} warning(s) due, {last['mails_sent']} "
             f"mail(s) sent{'; error: ' + last['error'] if last['error'] else ''}",
             f"next check: {state['next_check'] or 'when the service next ticks'}",
             f"{len(expiring)} certificate(s) within the warn window"]
    lines += [f"  {item['not_after']}  {item['days_left']:>5} days  {item['kind']:<18} {item['subject']}"
              for item in expiring]
    output.result(result, "\n".join(lines))
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``jobs list|run-due|cancel``: scheduled bulk jobs."""

from __future__ import annotations

from .. import scheduler
from ..store import opened
from ..vocabulary import JOB_STATUSES
from .options import bounded, clock_or_earlier, limit_help


def register(subparsers) -> None:
    parser = subparsers.add_parser("jobs", help="list scheduled jobs or run the due ones")
    verbs = parser.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    listing = verbs.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES, help="only jobs in this status")
    listing.add_argument("--limit", type=bounded("job_list_limit"), default=100,
                         help=f"at most this many jobs ({limit_help('job_list_limit')}, default %(default)s)")
    listing.set_defaults(handler=_list)
    due = verbs.add_parser("run-due", help="run every scheduled job whose time has come; lapse passed deadlines")
    not_ahead = clock_or_earlier("run scheduled jobs before their time and lapse operations whose deadline has not passed")
    due.add_argument("--now", metavar="TIME", type=not_ahead,
                     help="act as at this UTC time (ISO 8601), not later than this host's clock (a time to come would "
                          "run jobs early and lapse deadlines not yet passed); default: now")
    due.set_defaults(handler=_run_due)
    cancel = verbs.add_parser("cancel", help="cancel a scheduled job")
    cancel.add_argument("job_id", type=bounded("row_id"), metavar="ID", help="the job's id (see 'jobs list')")
    cancel.set_defaults(handler=_cancel)


def _list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        with store.read() as tx:
            jobs = scheduler.list_jobs(tx, args.status, args.limit)
    lines = [f"{job['id']:>6}  {job['status']:<10} {job['run_at']}  {job['kind']}  {job['result'] or ''}"
             for job in jobs]
    output.result(jobs, "\n".join(lines) if lines else "no jobs")
    return 0


def _run_due(args, output) -> int:
    with opened(args.store, actor="scheduler", create=False) as store:
        result = scheduler.run_due(store, args.now)
    lines = [f"job {job['id']}: {job['status']} {job['result']}" for job in result["jobs"]]
    if result["lapsed"]:
        lines.append(f"{len(result['lapsed'])} operation(s) lapsed: {', '.join(result['lapsed'][:20])}")
    output.result(result, "\n".join(lines) if lines else f"nothing due at {result['now']}")
    return 1 if any(job["status"] == "failed" for job in result["jobs"]) else 0


def _cancel(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        result = scheduler.cancel(store, args.job_id)
    job = result["job"]
    output.result(result, f"job {job['id']} {'cancelled' if result['changed'] else 'is ' + job['status']}")
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``report --html FILE`` / ``--csv FILE``: the CAPF report of every phone (what capf_info's
``report_path`` writes), as a self-contained HTML page or as CSV."""

from __future__ import annotations

from .. import reports
from ..store import opened


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write the CAPF report: an HTML page with charts and a sortable device table, or CSV",
        description="Write the CAPF report of every phone. The HTML page is one self-contained file (inline "
                    "SVG charts, no network); the CSV has one line per phone.")
    parser.add_argument("--html", metavar="FILE", help="write the HTML report to FILE (mode 0600)")
    parser.add_argument("--csv", metavar="FILE", help="write the CSV report to FILE (mode 0600)")
    parser.add_argument("--order-by", choices=reports.PHONE_ORDERS, default="device_name",
                        help="order of the phones: by name, or soonest LSC expiry first (default %(default)s)")
    parser.set_defaults(handler=_report, report_parser=parser)


def _report(args, output) -> int:
    targets = [(kind, path) for kind, path in (("html", args.html), ("csv", args.csv)) if path]
    if not targets:
        args.report_parser.error("one of --html FILE or --csv FILE is required")
    written = []
    with opened(args.store, actor="cli", create=False) as store:
        for kind, path in targets:
            reports.gather(store, ["phones"], report_path=path, report_format=kind,
                           order_by=args.order_by)
            written.append({"format": kind, "path": path})
    output.result({"reports": written}, "\n".join(f"{item['format'].upper()} report: {item['path']}" for item in written))
    return 0

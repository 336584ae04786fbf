# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``crl show|write FILE``: the CAPF CRL (signed first when none is current, as the service would)."""

from __future__ import annotations

from .. import revocation
from ..ca import crl as crl_module
from ..errors import CapfError
from ..store import opened


def register(subparsers) -> None:
    parser = subparsers.add_parser("crl", help="show or write the CAPF CRL of revoked LSCs")
    verbs = parser.add_subparsers(dest="crl_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    show = verbs.add_parser("show", help="show the current CRL: number, update times, revoked serials")
    show.add_argument("--pem", action="store_true", help="print the CRL in PEM as well")
    show.set_defaults(handler=_show)
    write = verbs.add_parser("write", help="write the current CRL (DER, mode 0644) to FILE, atomically")
    write.add_argument("file", metavar="FILE")
    write.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    write.set_defaults(handler=_write)


def _current(args) -> tuple[dict, bytes]:
    with opened(args.store, actor="cli", create=False) as store:
        revocation.refresh_crl(store)
        row = revocation.current_crl(store)
    return crl_module.describe(row["der"]), row["der"]


def _show(args, output) -> int:
    summary, der = _current(args)
    if args.pem:
        summary["pem"] = crl_module.to_pem(der)
    lines = [f"CRL number:  {summary['number']}", f"issuer:      {summary['issuer']}",
             f"this update: {summary['this_update']}", f"next update: {summary['next_update']}",
             f"revoked:     {len(summary['entries'])}"]
    lines += [f"  {entry['serial']}  {entry['revoked_at']}  {entry['reason']}" for entry in summary["entries"]]
    if args.pem:
        lines.append(summary["pem"].rstrip())
    output.result(summary, "\n".join(lines))
    return 0


def _write(args, output) -> int:
    summary, der = _current(args)
    data = crl_module.to_pem(der).encode("ascii") if args.pem else der
    try:
        revocation.write_crl_file(args.file, data)
    except OSError as exc:
        raise CapfError(f"FILE: cannot write {args.file}: {exc.strerror or exc}") from None
    output.result({"file": args.file, "number": summary["number"], "entries": len(summary["entries"])},
                  f"CRL {summary['number']} ({len(summary['entries'])} revoked) written to {args.file}")
    return 0

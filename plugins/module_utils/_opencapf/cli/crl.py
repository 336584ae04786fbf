# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``crl show|write FILE``: the CAPF CRLs, one per CAPF certificate (signed first when one is due, as
the service would); the active CAPF certificate's unless ``--issuer`` names another."""

from __future__ import annotations

from .. import revocation
from ..ca import crl as crl_module
from ..errors import CapfError, ValidationError
from ..store import opened

ISSUER_HELP = ("the CAPF certificate whose CRL to take, by the start of its SHA-256 fingerprint (as in its CRL's "
               "location capf-ID.crl); default: the active one")


def register(subparsers) -> None:
    parser = subparsers.add_parser("crl", help="show or write the CAPF CRL of revoked LSCs")
    verbs = parser.add_subparsers(dest="crl_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    show = verbs.add_parser("show", help="show the current CRL: number, update times, revoked serials")
    show.add_argument("--pem", action="store_true", help="print the CRL in PEM as well")
    show.add_argument("--issuer", metavar="ID", help=ISSUER_HELP)
    show.set_defaults(handler=_show)
    write = verbs.add_parser("write", help="write the current CRL (DER, mode 0644) to FILE, atomically")
    write.add_argument("file", metavar="FILE")
    write.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    write.add_argument("--issuer", metavar="ID", help=ISSUER_HELP)
    write.set_defaults(handler=_write)


def _current(args) -> tuple[dict, bytes, list[dict], list[str]]:
    """The chosen CRL's description and DER, the newest CRL of every CAPF certificate, and what keeps
    any CAPF certificate's CRL from being signed or trusted (or this host's clock, from being right)."""
    with opened(args.store, actor="cli", create=False) as store:
        signed = revocation.refresh_crls(store)
        rows = revocation.current_crls(store)
        with store.read() as tx:
            overview = revocation.crl_overview(store, tx)
    problems = [problem for issuer in overview["issuers"] for problem in issuer["problems"]]
    problems += [warning for warning in map(revocation.clock_warning, signed) if warning]
    wanted = (args.issuer or "").lower().replace(":", "")
    if not wanted:
        chosen = [row for row in rows if row["active"]]
        if not chosen:
            raise CapfError("; ".join(problems) or "the active CAPF certificate has no current CRL")
    else:
        chosen = [row for row in rows if row["signer_fingerprint"].startswith(wanted)]
    if len(chosen) != 1:
        known = ", ".join(row["signer_fingerprint"][:crl_module.ISSUER_ID_DIGITS] for row in rows) or "none"
        raise ValidationError("--issuer", f"must name one CAPF certificate with a CRL by the start of its fingerprint "
                              f"(known: {known})", args.issuer)
    summary = dict(crl_module.describe(chosen[0]["der"]), signer_fingerprint=chosen[0]["signer_fingerprint"])
    return summary, chosen[0]["der"], rows, problems


def _show(args, output) -> int:
    summary, der, rows, problems = _current(args)
    for problem in problems:
        output.warning(problem)
    if args.pem:
        summary["pem"] = crl_module.to_pem(der)
    summary["other_issuers"] = [{"signer_fingerprint": row["signer_fingerprint"], "number": row["number"],
                                 "entries": row["entries"]}
                                for row in rows if row["signer_fingerprint"] != summary["signer_fingerprint"]]
    lines = [f"CRL number:  {summary['number']}", f"issuer:      {summary['issuer']}",
             f"fingerprint: {summary['signer_fingerprint']}",
             f"this update: {summary['this_update']}", f"next update: {summary['next_update']}",
             f"revoked:     {len(summary['entries'])}"]
    lines += [f"  {entry['serial']}  {entry['revoked_at']}  {entry['reason']}" for entry in summary["entries"]]
    if args.pem:
        lines.append(summary["pem"].rstrip())
    lines += [f"also: CRL {other['number']} of CAPF certificate {other['signer_fingerprint'][:crl_module.ISSUER_ID_DIGITS]}"
              f" ({other['entries']} revoked; --issuer {other['signer_fingerprint'][:crl_module.ISSUER_ID_DIGITS]})"
              for other in summary["other_issuers"]]
    output.result(summary, "\n".join(lines))
    return 0


def _write(args, output) -> int:
    summary, der, _rows, problems = _current(args)
    for problem in problems:
        output.warning(problem)
    data = crl_module.to_pem(der).encode("ascii") if args.pem else der
    try:
        revocation.write_crl_file(args.file, data)
    except OSError as exc:
        raise CapfError(f"FILE: cannot write {args.file}: {exc.strerror or exc}") from None
    output.result({"file": args.file, "number": summary["number"], "entries": len(summary["entries"]),
                   "signer_fingerprint": summary["signer_fingerprint"]},
                  f"CRL {summary['number']} ({len(summary['entries'])} revoked) written to {args.file}")
    return 0

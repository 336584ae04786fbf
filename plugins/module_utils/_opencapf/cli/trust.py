# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``trust list|show``: the CAPF-trust and CallManager-trust stores."""

from __future__ import annotations

from .. import trust
from ..errors import CapfError
from ..store import opened
from ..vocabulary import TRUST_STORES
from .render import csv_text, pem_text, table

COLUMNS = ("trust_store", "common_name", "fingerprint", "is_ca", "not_after", "description")
_SHOWN = ("trust_store", "common_name", "subject", "issuer", "fingerprint", "is_ca", "not_after", "description")


def register(subparsers) -> None:
    parser = subparsers.add_parser("trust", help="list the trust stores or show one certificate")
    verbs = parser.add_subparsers(dest="trust_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    listing = verbs.add_parser("list", help="the certificates of both trust stores (or of one)")
    listing.add_argument("--trust-store", choices=TRUST_STORES, help="only this trust store")
    listing.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    listing.set_defaults(handler=_list)
    show = verbs.add_parser("show", help="one certificate by its SHA-256 fingerprint")
    show.add_argument("fingerprint", help="SHA-256 fingerprint (64 hex digits, colons allowed)")
    show.add_argument("--pem", action="store_true", help="print only the PEM")
    show.set_defaults(handler=_show)


def _list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store, store.read() as tx:
        rows = trust.list_certificates(tx, args.trust_store)
    if args.csv and not output.as_json:
        output.stream.write(csv_text(rows, COLUMNS))
        return 0
    output.result(rows, table(rows, COLUMNS) if rows else "no trusted certificates")
    return 0


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store, store.read() as tx:
        rows = trust.find_certificate(tx, args.fingerprint)
    if not rows:
        raise CapfError(f"no trust store holds the certificate {args.fingerprint}")
    if args.pem and not output.as_json:
        output.stream.write(pem_text(rows[0]["pem"]))
        return 0
    if not args.pem:
        for row in rows:
            row.pop("pem")
    width = max(map(len, _SHOWN))
    text = "\n\n".join("\n".join(f"  {field.ljust(width)}  {row[field]}" for field in _SHOWN) for row in rows)
    output.result(rows, text)
    return 0

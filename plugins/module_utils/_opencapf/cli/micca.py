# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``mic-ca create``: a manufacturing CA for simulated phones (tests and demos only)."""

from __future__ import annotations

from ..ca import certificates as c
from ..simulator.manufacturing import DEFAULT_NAME, ManufacturingCa
from ..store import opened


def register(subparsers) -> None:
    parser = subparsers.add_parser("mic-ca", help="test manufacturing CA that issues simulated phones' MICs")
    verbs = parser.add_subparsers(dest="mic_ca_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    create = verbs.add_parser("create", help="create the CA in a directory")
    create.add_argument("directory")
    create.add_argument("--common-name", default=DEFAULT_NAME)
    create.add_argument("--trust", action="store_true", help="also add it to CAPF-trust in the store")
    create.set_defaults(handler=_create)


def _create(args, output) -> int:
    ca = ManufacturingCa.create(args.directory, args.common_name)
    trusted = False
    if args.trust:
        with opened(args.store, actor="cli", create=False) as store:
            trusted = ca.trust_in(store)
    summary = c.describe(ca.certificate)
    summary.update(directory=args.directory, trusted=trusted)
    output.result(summary, f"manufacturing CA {summary['common_name']} in {args.directory}"
                           + (" (added to capf-trust)" if trusted else ""))
    return 0

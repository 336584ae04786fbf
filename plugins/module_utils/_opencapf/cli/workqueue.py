# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``stale-lsc list|delete all`` and ``csr list``: CAPF work records in the store."""

from __future__ import annotations

from ..errors import ValidationError
from ..store import certificates as certificate_records
from ..store import csrs as csr_records
from ..store import opened


def register(subparsers) -> None:
    stale = subparsers.add_parser("stale-lsc", help="LSCs signed but never installed (a newer key completed first)")
    verbs = stale.add_subparsers(dest="stale_command", metavar="ACTION", parser_class=type(stale))
    verbs.required = True
    verbs.add_parser("list", help="list stale LSCs").set_defaults(handler=_stale_list)
    delete = verbs.add_parser("delete", help="delete stale LSC records: 'stale-lsc delete all'")
    delete.add_argument("which", help="must be 'all'")
    delete.set_defaults(handler=_stale_delete)
    csr = subparsers.add_parser("csr", help="pending certificate work")
    csr_verbs = csr.add_subparsers(dest="csr_command", metavar="ACTION", parser_class=type(csr))
    csr_verbs.required = True
    listing = csr_verbs.add_parser("list", help="pending CSRs with timestamps")
    listing.add_argument("--all", action="store_true", help="every CSR row, not only pending ones")
    listing.set_defaults(handler=_csr_list)


def _stale_list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store, store.read() as tx:
        rows = certificate_records.stale(tx)
    text = "\n".join(f"{row['device_name']}  serial {row['serial']}  issued {row['issued_at']}  "
                     f"stale since {row['status_changed_at']}" for row in rows) or "no stale LSCs"
    output.result(rows, text)
    return 0


def _stale_delete(args, output) -> int:
    if args.which != "all":
        raise ValidationError("which", "must be 'all'", args.which)
    with opened(args.store, actor="cli", create=False) as store, store.transaction() as tx:
        count = certificate_records.delete_stale(tx, store.actor)
    output.result({"deleted": count}, f"deleted {count} stale LSC(s)")
    return 0


def _csr_list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store, store.read() as tx:
        rows = csr_records.listing(tx, None if args.all else "pending")
    text = "\n".join(f"{row['created_at']}  {row['device_name']}  {row['status']}  key {row['public_key_fingerprint'][:16]}"
                     for row in rows) or "no pending CSRs"
    output.result(rows, text)
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``stale-lsc list|delete all`` and ``csr list|export|import``: CAPF work records in the store."""

from __future__ import annotations

from .. import enrolment
from ..errors import ValidationError
from ..issuers import offline
from ..store import certificates as certificate_records
from ..store import csrs as csr_records
from ..store import opened
from .progress import Progress


def register(subparsers) -> None:
    stale = subparsers.add_parser("stale-lsc", help="LSCs signed but never installed (a newer key completed first, or the phone did not store them)")
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
    export = csr_verbs.add_parser("export", help="write pending offline-CA CSRs for the CA operator")
    export.add_argument("--directory", required=True, help="where to write <DEVICE>.csr.pem (or the bundle)")
    export.add_argument("--bundle", action="store_true", help=f"one file, {offline.BUNDLE_NAME}, with every CSR")
    export.add_argument("--device", action="append", metavar="NAME", help="only this phone (repeatable)")
    export.set_defaults(handler=_csr_export)
    imported = csr_verbs.add_parser("import", help="import certificates signed by the offline CA")
    imported.add_argument("files", nargs="+", metavar="FILE", help="PEM, DER or PKCS#7 files (bundles too)")
    imported.add_argument("--check", action="store_true", help="report only; record nothing")
    imported.set_defaults(handler=_csr_import)


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
        rows = csr_records.listing(tx, None if args.all else "pending", clock_skew=store.clock_skew)
    text = "\n".join(f"{row['created_at']}  {row['device_name']}  {row['status']}  key {row['public_key_fingerprint'][:16]}"
                     for row in rows) or "no pending CSRs"
    output.result(rows, text)
    return 0


def _csr_export(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        paths = enrolment.export_csrs(store, args.directory, bundle=args.bundle, devices=args.device)
    output.result({"files": paths}, "\n".join(paths) or "no pending CSRs to export")
    return 0


def _csr_import(args, output) -> int:
    progress = Progress.for_output(output)
    try:
        sources = offline.read_files(args.files)
        with opened(args.store, actor="cli", create=False, read_only=args.check) as store:
            result = enrolment.import_certificates(store, store.actor, sources, check_mode=args.check,
                                                   progress=progress)
    finally:
        progress.close()
    lines = [f"{device}: matched (delivered on the phone's next CAPF session)" for device in result.matched]
    lines += [f"{source}: {device}: already imported" for source, device in result.already]
    lines += [f"{source}: {device}: stale: {reason}" for source, device, reason in result.stale]
    lines += [f"{item.source}: {item.subject + ': ' if item.subject else ''}refused [{item.code}]: {item.reason}"
              for item in result.problems]
    output.result({**result.as_dict(), "changed": result.changed and not args.check},
                  "\n".join(lines) or "no certificates found")
    return 1 if result.problems else 0

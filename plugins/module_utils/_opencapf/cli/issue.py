# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``issue``: sign an LSC for a device name and a public-key file."""

from __future__ import annotations

from ..ca import certificates, lsc
from ..errors import CapfError
from ..files import read_option_file, write_private_file
from ..store import opened
from .options import bounded, limit_help


def register(subparsers) -> None:
    parser = subparsers.add_parser("issue", help="sign an LSC for a device and its public key")
    parser.add_argument("device_name", help="device name, e.g. SEP001122334455")
    parser.add_argument("public_key", help="phone public key file (PEM or DER SubjectPublicKeyInfo, or a CSR)")
    parser.add_argument("--validity-days", type=bounded("validity_days"), default=None,
                        help=f"override the validity_days service parameter ({limit_help('validity_days')})")
    parser.add_argument("--out", help="also write the certificate PEM to this file")
    parser.set_defaults(handler=run)


def run(args, output) -> int:
    public_key = certificates.load_public_key(read_option_file(args.public_key, "public_key", "public key file"),
                                              "public_key")
    with opened(args.store, actor="cli", create=False) as store:
        issued = lsc.issue(store, args.device_name, public_key, source="cli", validity_days=args.validity_days)
    if args.out:
        try:  # a certificate is public (0644); a symbolic link at --out is replaced, not followed
            write_private_file(args.out, issued.pem.encode("ascii"), mode=0o644)
        except OSError as exc:
            raise CapfError(f"cannot write --out {args.out}: {exc.strerror} (the LSC was issued and recorded, "
                            f"serial {issued.serial})") from None
    if issued.validity_capped:
        output.warning(f"the LSC's validity was shortened to the CAPF certificate's expiry: it ends at "
                       f"{issued.not_after}, with the CAPF certificate that signs it")
    output.result(
        {"device_name": issued.device_name, "serial": issued.serial, "not_after": issued.not_after,
         "validity_capped": issued.validity_capped, "pem": issued.pem},
        issued.pem.rstrip(),
    )
    return 0

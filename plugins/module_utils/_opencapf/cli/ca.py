# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``ca show|regenerate|upload``: the CAPF certificate."""

from __future__ import annotations

from ..ca import authority
from ..files import read_option_file
from ..store import opened
from ..vocabulary import CAPF_KEY_TYPES
from .render import certificate_text, pem_text


def register(subparsers) -> None:
    parser = subparsers.add_parser("ca", help="show, regenerate or upload the CAPF certificate")
    verbs = parser.add_subparsers(dest="ca_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    show = verbs.add_parser("show", help="show the active CAPF certificate (and --history)")
    show.add_argument("--history", action="store_true", help="also list retired CAPF certificates")
    show.add_argument("--pem", action="store_true",
                      help="print only the PEM (with --history, every certificate's, newest first); with --json, "
                           "the summary gains a pem field")
    show.set_defaults(handler=_show)
    regenerate = verbs.add_parser("regenerate", help="replace the CAPF certificate with a new key; no restart needed")
    regenerate.add_argument("--key-type", choices=CAPF_KEY_TYPES, default=authority.DEFAULT_KEY_TYPE)
    regenerate.set_defaults(handler=_regenerate)
    upload = verbs.add_parser("upload", help="install a CAPF certificate and key from files")
    upload.add_argument("--certificate", required=True, metavar="PEM", help="certificate (chain) file")
    upload.add_argument("--key", required=True, metavar="PEM", help="private key file (mode 0600)")
    upload.set_defaults(handler=_upload)


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        certificates = authority.history(store) if args.history else [authority.current(store)]
    if args.pem and not output.as_json:
        output.stream.write("".join(pem_text(summary["pem"]) for summary in certificates))
        return 0
    if not args.pem:
        for summary in certificates:
            summary.pop("pem", None)
    output.result(certificates if args.history else certificates[0],
                  "\n\n".join(certificate_text(summary) for summary in certificates))
    return 0


def _regenerate(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        summary = authority.regenerate(store, args.key_type)
    summary.pop("pem", None)
    output.result(summary, "CAPF certificate regenerated\n" + certificate_text(summary))
    return 0


def _upload(args, output) -> int:
    certificate = read_option_file(args.certificate, "--certificate", "certificate file")
    key = read_option_file(args.key, "--key", "key file", private=True)
    with opened(args.store, actor="cli", create=False) as store:
        summary, changed = authority.replace(store, certificate, key)
    summary.pop("pem", None)
    output.result({"changed": changed, **summary},
                  ("CAPF certificate replaced\n" if changed else "CAPF certificate already active\n")
                  + certificate_text(summary))
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``init``: create the store and the CAPF certificate."""

from __future__ import annotations

from ..ca import authority
from ..store import opened
from ..vocabulary import CAPF_KEY_TYPES
from .render import certificate_text


def register(subparsers) -> None:
    parser = subparsers.add_parser("init", help="create the store and the CAPF certificate (idempotent)")
    parser.add_argument("--key-type", choices=CAPF_KEY_TYPES, default=authority.DEFAULT_KEY_TYPE,
                        help="CAPF key type (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args, output) -> int:
    with opened(args.store, actor="cli") as store:
        summary, created = authority.ensure(store, args.key_type)
        result = {"store": store.location, "created": created, "capf_certificate": summary}
    output.result(result, f"store {result['store']} {'initialised' if created else 'already initialised'}\n"
                          + certificate_text(summary))
    return 0

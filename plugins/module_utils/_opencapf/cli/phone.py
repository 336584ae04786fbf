# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``phone enrol|fleet|revoke``: the phone simulator on the command line, and revoking a phone's LSC.

``phone enrol`` runs one simulated phone's CAPF session, like the ``capfc`` client; its identity
(settings, MIC, LSC, flash) lives in ``--dir``/DEVICE. ``phone fleet`` runs N in-memory phones
concurrently with a progress bar (on a terminal) and an end summary.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re

from .. import revocation
from ..errors import CapfError
from ..files import read_option_file, safe_file_name
from ..protocol.constants import DEFAULT_PORT, XCAPS_ALL
from ..protocol.phone import PhoneBehaviour
from ..simulator.client import Target, enrol
from ..simulator.fleet import run_fleet
from ..simulator.identity import PhoneIdentity, PhoneSettings
from ..simulator.manufacturing import ManufacturingCa
from ..store import opened
from ..store import phones as phone_records
from ..vocabulary import AUTH_MODES, REVOCATION_REASONS, SECURITY_MODES
from .options import address, bounded, limit_help
from .progress import Progress


def _target_arguments(parser) -> None:
    parser.add_argument("--server", action="append", required=True, metavar="ADDRESS", type=address,
                        help="CAPF address (repeat for IPv4 and IPv6)")
    parser.add_argument("--port", type=bounded("port"), default=DEFAULT_PORT,
                        help=f"CAPF port ({limit_help('port')}, default {DEFAULT_PORT})")
    parser.add_argument("--capf-cert", metavar="PEM", help="CAPF certificate to verify the server (default: no check)")
    parser.add_argument("--legacy-tls", action="store_true", help="allow TLS 1.0 and legacy ciphers")
    parser.add_argument("--timeout", type=bounded("read_timeout"), default=10.0,
                        help=f"seconds per read ({limit_help('read_timeout')}, default 10)")
    parser.add_argument("--retries", type=bounded("retries"), default=3,
                        help=f"retries after a communication failure ({limit_help('retries')}, default 3)")
    parser.add_argument("--retry-interval", type=bounded("retry_interval"), default=30.0,
                        help=f"seconds between retries ({limit_help('retry_interval')}, default 30)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("phone", help="simulate phones talking to a CAPF service")
    verbs = parser.add_subparsers(dest="phone_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    one = verbs.add_parser("enrol", help="run one phone's CAPF session (like capfc)")
    one.add_argument("device_name")
    one.add_argument("--dir", default="phones", help="directory of phone identities (default ./phones)")
    one.add_argument("--auth-mode", choices=AUTH_MODES, help="the phone's CAPF authentication mode")
    one.add_argument("--auth-string", help="the authentication string entered on the phone")
    one.add_argument("--security-mode", choices=SECURITY_MODES)
    one.add_argument("--ip-mode", choices=("dual", "ipv4", "ipv6"))
    one.add_argument("--phone-family", action="append", type=int, choices=(4, 6),
                     help="address families the phone has (repeatable)")
    one.add_argument("--mic-ca", metavar="DIR", help="manufacturing CA that issues the MIC of a new identity")
    one.add_argument("--no-ec", action="store_true", help="the phone cannot generate EC keys")
    one.add_argument("--jabber", action="store_true", help="behave like Jabber: version 2, no PASSWORD, no progress")
    one.add_argument("--x-csr", action="store_true",
                     help="advertise the opencapf X-CSR/1 extension (sign CSRs for third-party CAs, keep a pending "
                          "key, understand RETRY_LATER); real phones do not")
    _target_arguments(one)
    one.set_defaults(handler=_enrol)
    revoke = verbs.add_parser("revoke", help="revoke a phone's LSC in the store (and so on the CAPF CRL)")
    revoke.add_argument("device_name")
    revoke.add_argument("--reason", required=True, choices=REVOCATION_REASONS, help="the RFC 5280 reason")
    revoke.add_argument("--serial", help="the LSC's serial (hex); default every LSC the phone holds or was issued")
    revoke.add_argument("--check", action="store_true", help="show what would be revoked; change nothing")
    revoke.set_defaults(handler=_revoke)
        many = verbs.add_parser("fleet", help="run N phones concurrently; progress on a terminal, and a summary")
    which = many.add_mutually_exclusive_group(required=True)
    which.add_argument("--count", type=bounded("phones"),
                       help=f"this many phones, named from --first upwards ({limit_help('phones')})")
    which.add_argument("--names", nargs="+", metavar="NAME", help="these phones (names separated by spaces)")
    many.add_argument("--first", default="SEP000000000000", help="first device name; the rest count up in hex")
    many.add_argument("--concurrency", type=bounded("phones"), default=100,
                      help=f"phones in a session at once ({limit_help('phones')}, default 100)")
    many.add_argument("--x-csr", action="store_true", help="every phone advertises the X-CSR/1 extension")
    many.add_argument("--auth-mode", choices=AUTH_MODES, default="null_string")
    many.add_argument("--auth-string", default="")
    many.add_argument("--dir", help="keep each phone's identity (MIC, LSC) in DIR/DEVICE across runs")
    many.add_argument("--mic-ca", metavar="DIR", help="manufacturing CA that issues MICs to new identities")
    many.add_argument("--config-from-store", action="store_true",
                      help="each phone takes its authentication and security mode from the store (--store), as a "
                           "real phone takes them from its configuration file")
    many.add_argument("--strings-file", metavar="CSV",
                      help="authentication strings typed on the phones: a CSV with device_name and "
                           "authentication_string columns (as written by bulk jobs)")
    _target_arguments(many)
    many.set_defaults(handler=_fleet)


def _revoke(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        result = revocation.revoke_lsc(store, args.device_name, args.reason, serial=args.serial,
                                       check_mode=args.check)
    for warning in result.get("warnings", []):
        output.warning(warning)
    revoked = ", ".join(result["revoked"])
    verb = "would revoke" if args.check else "revoked"
    text = (f"{result['name']}: {verb} LSC {revoked} ({args.reason})" if result["changed"]
            else f"{result['name']}: no LSC to revoke (already revoked)")
    output.result(result, text)
    return 0


def _target(args) -> Target:
    cadata = (read_option_file(args.capf_cert, "--capf-cert", "CAPF certificate file").decode("ascii", "replace")
              if args.capf_cert else None)
    return Target(tuple(args.server), args.port, cadata=cadata, legacy_tls=args.legacy_tls, timeout=args.timeout)


def _identity(args) -> PhoneIdentity:
    # The simulator sends any name (hostile ones too), but its directory stays inside --dir.
    directory = os.path.join(args.dir, safe_file_name(args.device_name.upper(), "phone"))
    if os.path.exists(os.path.join(directory, "phone.json")):
        identity = PhoneIdentity.load(directory)
    else:
        mic_ca = ManufacturingCa.load(args.mic_ca) if args.mic_ca else None
        identity = PhoneIdentity.create(directory, PhoneSettings(args.device_name.upper()), mic_ca=mic_ca)
    settings = identity.settings
    for option, name in (("auth_mode", "auth_mode"), ("auth_string", "auth_string"),
                         ("security_mode", "security_mode"), ("ip_mode", "ip_mode")):
        if getattr(args, option):
            setattr(settings, name, getattr(args, option))
    if args.phone_family:
        settings.phone_families = sorted(set(args.phone_family))
    settings.check()
    identity.save()
    return identity


def _enrol(args, output) -> int:
    identity = _identity(args)
    behaviour = PhoneBehaviour(ec_capable=not args.no_ec, x_caps=XCAPS_ALL if args.x_csr else 0)
    if args.jabber:
        behaviour = PhoneBehaviour(version=2, request_in_progress=False, empty_password=False, ec_capable=False)
    result = asyncio.run(enrol(identity, _target(args), behaviour=behaviour, retries=args.retries,
                               retry_interval=args.retry_interval, string_entered=bool(args.auth_string)))
    data = dict(result.__dict__)
    text = f"{result.device_name}: {result.outcome}"
    if result.operation:
        text += f" (operation {result.operation}{', key ' + result.key if result.key else ''})"
    if result.retry_delay is not None:
        text += f": the CA has not signed yet; retry in {result.retry_delay} s"
    if result.detail:
        text += f": {result.detail}"
    output.result(data, text)
    return 0 if result.ok else 1


def _fleet_names(first: str, count: int) -> list[str]:
    prefix, digits = first[:3].upper(), first[3:]
    try:
        start = int(digits, 16)
    except ValueError:
        raise CapfError(f"--first must be a prefix and 12 hex digits, got {first!r}") from None
    return [f"{prefix}{start + index:012X}" for index in range(count)]


def _typed_strings(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    data = read_option_file(path, "--strings-file", "strings file", private=True)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    if rows and not {"device_name", "authentication_string"} <= set(rows[0]):
        raise CapfError(f"strings file {path} needs the columns device_name and authentication_string")
    return {row["device_name"].strip().upper(): row["authentication_string"].strip() for row in rows}


def _configured_modes(store_location: str | None, names: list[str]) -> dict[str, tuple[str, str]]:
    with opened(store_location, actor="simulator", create=False) as store, store.read() as tx:
        found = phone_records.by_name(tx, names)
    return {name: (row["auth_mode"], row["security_mode"]) for name, row in found.items()}


def _fleet_identities(args, progress) -> list:
    if args.names:  # also accepts one argument holding names separated by spaces or commas
        names = [name.upper() for argument in args.names for name in re.split(r"[\s,]+", argument) if name]
    else:
        names = _fleet_names(args.first, args.count)
    strings = _typed_strings(args.strings_file)
    modes = _configured_modes(args.store, names) if args.config_from_store else {}
    mic_ca = ManufacturingCa.load(args.mic_ca) if args.mic_ca else None
    identities = []
    for name in names:
        auth_mode, security_mode = modes.get(name, (args.auth_mode, "non_secure"))
        auth_string = strings.get(name, args.auth_string)
        directory = os.path.join(args.dir, safe_file_name(name, "phone")) if args.dir else None
        if directory and os.path.exists(os.path.join(directory, "phone.json")):
            identity = PhoneIdentity.load(directory)
        else:
            identity = PhoneIdentity.create(directory, PhoneSettings(name), mic_ca=mic_ca)
        identity.settings.auth_mode, identity.settings.auth_string = auth_mode, auth_string
        identity.settings.security_mode = security_mode
        identity.settings.check()
        identity.save()
        identities.append(identity)
        progress("identities", len(identities), len(names))
    return identities


def _fleet(args, output) -> int:
    progress = Progress.for_output(output)
    identities = _fleet_identities(args, progress)
    summary = asyncio.run(run_fleet(identities, _target(args), concurrency=args.concurrency,
                                    progress=lambda done, total, _result: progress("phones", done, total),
                                    retries=args.retries,
                                    retry_interval=args.retry_interval,
                                    behaviour=PhoneBehaviour(x_caps=XCAPS_ALL if args.x_csr else 0)))
    results = summary.pop("results")
    lines = [f"phones {summary['total']}: ok {summary['ok']}, failed {summary['failed']} "
             f"in {summary['elapsed_seconds']} s ({summary['rate_per_second']}/s)"]
    lines += [f"  {count} x {reason}" for reason, count in sorted(summary["failed_by_reason"].items())]
    summary["outcomes"] = {result.device_name: result.outcome for result in results}
    output.result(summary, "\n".join(lines))
    return 0 if summary["failed"] == 0 else 1

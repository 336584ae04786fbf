# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``phone enrol|fleet``: the phone simulator on the command line.

``phone enrol`` runs one simulated phone's CAPF session, like the ``capfc`` client; its identity
(settings, MIC, LSC, flash) lives in ``--dir``/DEVICE. ``phone fleet`` runs N in-memory phones
concurrently with a progress bar and an end summary.
"""

from __future__ import annotations

import asyncio
import os

from ..errors import CapfError
from ..files import read_input_file
from ..protocol.constants import DEFAULT_PORT
from ..protocol.phone import PhoneBehaviour
from ..simulator.client import Target, enrol
from ..simulator.fleet import run_fleet
from ..simulator.identity import PhoneIdentity, PhoneSettings
from ..simulator.manufacturing import ManufacturingCa
from ..vocabulary import AUTH_MODES, SECURITY_MODES


def _target_arguments(parser) -> None:
    parser.add_argument("--server", action="append", required=True, metavar="ADDRESS",
                        help="CAPF address (repeat for IPv4 and IPv6)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--capf-cert", metavar="PEM", help="CAPF certificate to verify the server (default: no check)")
    parser.add_argument("--legacy-tls", action="store_true", help="allow TLS 1.0 and legacy ciphers")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per read")
    parser.add_argument("--retries", type=int, default=3, help="retries after a communication failure")
    parser.add_argument("--retry-interval", type=float, default=30.0, help="seconds between retries")


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
    _target_arguments(one)
    one.set_defaults(handler=_enrol)
    many = verbs.add_parser("fleet", help="run N phones concurrently; progress and a summary")
    many.add_argument("--count", type=int, required=True)
    many.add_argument("--first", default="SEP000000000000", help="first device name; the rest count up in hex")
    many.add_argument("--concurrency", type=int, default=100)
    many.add_argument("--auth-mode", choices=AUTH_MODES, default="null_string")
    many.add_argument("--auth-string", default="")
    _target_arguments(many)
    many.set_defaults(handler=_fleet)


def _target(args) -> Target:
    cadata = read_input_file(args.capf_cert, "CAPF certificate").decode("ascii", "replace") if args.capf_cert else None
    return Target(tuple(args.server), args.port, cadata=cadata, legacy_tls=args.legacy_tls, timeout=args.timeout)


def _identity(args) -> PhoneIdentity:
    directory = os.path.join(args.dir, args.device_name.upper())
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
    behaviour = PhoneBehaviour(ec_capable=not args.no_ec)
    if args.jabber:
        behaviour = PhoneBehaviour(version=2, request_in_progress=False, empty_password=False, ec_capable=False)
    result = asyncio.run(enrol(identity, _target(args), behaviour=behaviour, retries=args.retries,
                               retry_interval=args.retry_interval, string_entered=bool(args.auth_string)))
    data = dict(result.__dict__)
    text = f"{result.device_name}: {result.outcome}"
    if result.operation:
        text += f" (operation {result.operation}{', key ' + result.key if result.key else ''})"
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


def _fleet(args, output) -> int:
    identities = [PhoneIdentity(PhoneSettings(name, auth_mode=args.auth_mode, auth_string=args.auth_string))
                  for name in _fleet_names(args.first, args.count)]
    errors = output.errors

    def progress(done, total, _result):
        width = 30
        filled = width * done // total
        errors.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            errors.write("\n")
        errors.flush()

    summary = asyncio.run(run_fleet(identities, _target(args), concurrency=args.concurrency,
                                    progress=None if output.as_json else progress, retries=args.retries,
                                    retry_interval=args.retry_interval))
    results = summary.pop("results")
    lines = [f"phones {summary['total']}: ok {summary['ok']}, failed {summary['failed']} "
             f"in {summary['elapsed_seconds']} s ({summary['rate_per_second']}/s)"]
    lines += [f"  {count} x {reason}" for reason, count in sorted(summary["failed_by_reason"].items())]
    summary["outcomes"] = {result.device_name: result.outcome for result in results}
    output.result(summary, "\n".join(lines))
    return 0 if summary["failed"] == 0 else 1

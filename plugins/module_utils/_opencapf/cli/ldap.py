# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``ldap sync|list``: LDAP directory sync (see ``directory``).

``ldap sync --config FILE`` syncs the directory a YAML (or JSON) file describes, with the keys of
the ``capf_ldap_sync`` module; ``ldap sync --name NAME`` syncs one the store keeps from an earlier
sync. The bind password never comes from the command line: ``--bind-password-file`` (a file only
its owner may read) or ``$OPENCAPF_LDAP_BIND_PASSWORD``.
"""

from __future__ import annotations

import os

from .. import directory
from ..dependencies import require, yaml
from ..errors import ValidationError
from ..files import read_option_file
from ..store import opened

PASSWORD_ENV = "OPENCAPF_LDAP_BIND_PASSWORD"
CONFIG_MAX_BYTES = 64 * 1024


def register(subparsers) -> None:
    parser = subparsers.add_parser("ldap", help="sync phones from an LDAP directory")
    verbs = parser.add_subparsers(dest="ldap_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    # No abbreviated options: --bind-password must never be taken for --bind-password-file.
    sync = verbs.add_parser("sync", help="sync a directory now: create its devices with the device template",
                            allow_abbrev=False)
    which = sync.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", metavar="FILE",
                       help="YAML file of the directory configuration (the capf_ldap_sync options, no password)")
    which.add_argument("--name", help="a directory the store keeps from an earlier sync")
    sync.add_argument("--bind-password-file", metavar="FILE",
                      help=f"file holding the bind password (mode 0600); default ${PASSWORD_ENV}, else the password "
                           "the store keeps for a scheduled directory")
    sync.add_argument("--check", action="store_true", help="report what the sync would do; change nothing")
    sync.set_defaults(handler=_sync)
    listing = verbs.add_parser("list", help="list the directories the store keeps and their last sync")
    listing.set_defaults(handler=_list)


def _config(path: str) -> dict:
    require("PyYAML")
    text = read_option_file(path, "--config", "directory configuration file", max_bytes=CONFIG_MAX_BYTES)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError("--config", f"is not valid YAML ({str(exc).splitlines()[0]})", path) from None
    if not isinstance(data, dict):
        raise ValidationError("--config", "must hold a mapping of capf_ldap_sync options", path)
    if "bind_password" in data:
        raise ValidationError("--config", "must not hold bind_password (use --bind-password-file or "
                              f"${PASSWORD_ENV})", path)
    return data


def _password(args) -> str | None:
    if args.bind_password_file:
        text = read_option_file(args.bind_password_file, "--bind-password-file", "password file", private=True,
                                max_bytes=4096).decode("utf-8")
        return text.rstrip("\r\n")
    return os.environ.get(PASSWORD_ENV) or None


def _sync(args, output) -> int:
    password = _password(args)
    config = _config(args.config) if args.config else None
    with opened(args.store, actor="cli", create=False, read_only=args.check) as store:
        if config is not None:
            result = directory.sync(store, config, bind_password=password, check_mode=args.check)
        else:
            result = directory.sync_stored(store, args.name, bind_password=password, check_mode=args.check)
    if result["superseded"]:  # its one warning says why
        output.result(result, result["warnings"][-1])
        return 0
    for warning in result["warnings"]:
        output.warning(warning)
    devices = result["devices"]
    verb = "would be " if args.check else ""
    lines = [f"directory {result['directory']['name']}: {result['directory']['entries']} entries, "
             f"{result['directory']['mapped']} devices"
             + (" (first sync: the template applies to every device)" if result["directory"]["first_sync"] else "")]
    for key in ("created", "changed", "absent", "removed"):
        if devices[key]:
            lines.append(f"{len(devices[key])} {verb if key != 'absent' else ''}{key}: {', '.join(devices[key][:20])}"
                         + (" ..." if len(devices[key]) > 20 else ""))
    if result["strings_file"]:
        lines.append(f"{len(result['authentication_strings'])} generated authentication string(s) written to "
                     f"{result['strings_file']}")
    elif result["authentication_strings"]:
        lines += [f"{item['device_name']},{item['authentication_string']}" for item in result["authentication_strings"]]
    if not result["changed"]:
        lines.append("no change")
    output.result(result, "\n".join(lines))
    return 0


def _list(args, output) -> int:
    with opened(args.store, actor="cli", create=False) as store:
        rows = directory.listing(store)
    lines = [f"{row['name']}: last sync {row['last_synced_at'] or 'never'}, next {row['next_sync_at'] or 'not scheduled'}"
             f", {row['last_result']}" for row in rows]
    output.result(rows, "\n".join(lines) if lines else "no directories")
    return 0

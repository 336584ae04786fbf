# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``template list|show NAME|apply NAME DEVICE...``: device templates (defined with the
``capf_device_template`` module or the ``templates`` section of a declarative file)."""

from __future__ import annotations

import argparse
import re

from .. import templates
from ..errors import NotFoundError
from ..store import opened
from ..vocabulary import PLACEHOLDER_PATTERN, TEMPLATE_EXISTING

_VARIABLE = re.compile(r"(%s)=(.*)" % PLACEHOLDER_PATTERN, re.DOTALL)


def register(subparsers) -> None:
    parser = subparsers.add_parser("template", help="list, show or apply device templates")
    verbs = parser.add_subparsers(dest="template_command", metavar="ACTION", parser_class=type(parser))
    verbs.required = True
    listing = verbs.add_parser("list", help="list the device templates")
    listing.set_defaults(handler=_list)
    show = verbs.add_parser("show", help="show one device template")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=_show)
    apply = verbs.add_parser("apply", help="create devices with a template's CAPF settings")
    apply.add_argument("name", metavar="NAME", help="the template")
    apply.add_argument("devices", nargs="+", metavar="DEVICE", help="device names")
    apply.add_argument("--existing", choices=TEMPLATE_EXISTING, default="keep",
                       help="devices that exist already: keep their CAPF settings (default) or re-apply the template")
    apply.add_argument("--var", action="append", default=[], type=_variable, metavar="NAME=VALUE",
                       help="a value for the placeholder {NAME} of the description pattern, for every device "
                            "(repeatable)")
    apply.add_argument("--strings-file", metavar="CSV",
                       help="write generated authentication strings here (mode 0600) instead of printing them")
    apply.add_argument("--check", action="store_true", help="show what would change; write nothing")
    apply.set_defaults(handler=_apply)


def _variable(text: str) -> tuple[str, str]:
    """The argparse ``type`` of ``--var``."""
    match = _VARIABLE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, NAME letters, digits and '_', got {text!r}")
    return match.group(1), match.group(2)


def _text(view: dict) -> str:
    width = max(len(key) for key in view)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in view.items())


def _list(args, output) -> int:
    with opened(args.store, actor="cli", create=False, read_only=True) as store:
        found = templates.list_all(store)
    lines = [f"{view['name']}: " + ", ".join(f"{key}={value}" for key, value in view.items() if key != "name")
             for view in found]
    output.result(found, "\n".join(lines) if lines else "no device templates")
    return 0


def _show(args, output) -> int:
    with opened(args.store, actor="cli", create=False, read_only=True) as store:
        view = templates.get(store, args.name)
    if view is None:
        raise NotFoundError(f"template: there is no device template named {args.name.strip()!r}")
    output.result(view, _text(view))
    return 0


def _apply(args, output) -> int:
    variables = dict(args.var)
    with opened(args.store, actor="cli:template", create=False, read_only=args.check) as store:
        result = templates.apply(store, args.name, [(name, variables) for name in args.devices], via="template",
                                 existing=args.existing, check_mode=args.check, strings_file=args.strings_file)
    counts = result["counts"]
    verb = "would be" if args.check else "were"
    lines = [f"template {result['template']}: {counts['created']} device(s) {verb} created, {counts['updated']} "
             f"updated, {counts['unchanged']} unchanged, {counts['kept']} kept as they are"]
    lines += [f"  + {name}" for name in result["created"]] + [f"  ~ {name}" for name in result["updated"]]
    data = {key: result[key] for key in ("changed", "template", "counts", "created", "updated", "kept")}
    if result["authentication_strings"]:
        if result["strings_file"]:
            data["strings_file"] = result["strings_file"]
            lines.append(f"generated authentication strings written to {result['strings_file']} (mode 0600)")
        else:
            data["authentication_strings"] = result["authentication_strings"]
            lines.append("generated authentication strings (shown once):")
            lines += [f"  {entry['device_name']}: {entry['authentication_string']}"
                      for entry in result["authentication_strings"]]
    output.result(data, "\n".join(lines))
    return 0

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``plan FILE`` / ``apply FILE`` / ``schema``: the declarative CAPF file."""

from __future__ import annotations

import dataclasses
import json

from ..declarative import deployment, document
from ..declarative.schema import schema
from ..store import opened
from .progress import Progress


def register(subparsers) -> None:
    plan = subparsers.add_parser("plan", help="show what applying a declarative file would change")
    plan.add_argument("file", help="the deployment YAML file")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help="exit 2 when there are changes (0 when none), like terraform plan")
    _switches(plan)
    plan.set_defaults(handler=_plan)
    apply = subparsers.add_parser(
        "apply", help="converge the store to a declarative file, all or nothing",
        description="Converge the store to a declarative file in one transaction: every section or none. It holds "
                    "the store's write lock until it commits: the CAPF service's writes wait for it.")
    apply.add_argument("file", help="the deployment YAML file")
    _switches(apply)
    apply.add_argument("--strings-file", metavar="CSV",
                       help="write generated authentication strings here (mode 0600) instead of printing them")
    apply.set_defaults(handler=_apply)
    show = subparsers.add_parser("schema", help="print the JSON Schema of the declarative file")
    show.set_defaults(handler=_schema)


def _switches(parser) -> None:
    parser.add_argument("--strict-ca-rules", action="store_true",
                        help="refuse CA certificates that deviate from the CA rules without harm (default: accept "
                             "them with a warning naming the rule); as strict_ca_rules: true on every trust item")
    parser.add_argument("--fail-on-unmatched", action="store_true",
                        help="fail when a bulk query names devices that are not in the store (default: warn); as "
                             "fail_on_unmatched: true on every bulk item")


def _options(args) -> deployment.Options:
    return deployment.Options(strict_ca_rules=args.strict_ca_rules, fail_on_unmatched=args.fail_on_unmatched)


def _warn(report, output) -> None:
    for text in report.warnings:
        output.warning(text)


def _plan(args, output) -> int:
    loaded = document.load(args.file)
    with opened(args.store, actor="cli:plan", read_only=True) as store:
        report = deployment.plan(store, loaded, _options(args))
    _warn(report, output)
    output.result(deployment.summary(report), deployment.render(report))
    return 2 if args.detailed_exitcode and report.changed else 0


def _apply(args, output) -> int:
    progress = Progress.for_output(output)
    progress(f"reading {args.file}")
    try:
        loaded = document.load(args.file)
        options = dataclasses.replace(_options(args), progress=progress)
        with opened(args.store, actor="cli:apply") as store:
            # The strings file is written inside the apply's change: one that cannot be written fails
            # the apply, which then generates no string that nobody could ever read again.
            report = deployment.apply(store, loaded, options, strings_file=args.strings_file,
                                      strings_field="--strings-file")
    finally:
        progress.close()
    _warn(report, output)
    result = deployment.summary(report)
    text = deployment.render(report)
    if report.generated_strings:
        if args.strings_file:
            text += f"\ngenerated authentication strings written to {args.strings_file} (mode 0600)"
            result["strings_file"] = args.strings_file
        else:
            result["authentication_strings"] = report.generated_strings
            text += "\ngenerated authentication strings (shown once):\n" + "\n".join(
                f"  {name}: {value}" for name, value in sorted(report.generated_strings.items()))
    output.result(result, text)
    return 0


def _schema(args, output) -> int:
    output.line(json.dumps(schema(), indent=2, sort_keys=True))
    return 0

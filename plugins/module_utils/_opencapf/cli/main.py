# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Entry point of the command line.

Every verb module exposes ``register(subparsers)``, adding parsers whose ``handler`` takes the
parsed arguments and an ``Output`` and returns an exit code. Engine errors become one line on
standard error and exit status 1; usage errors exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .. import __version__
from ..errors import CapfError
from ..files import check_private_location
from ..store import ENV_STATE_DIR
from . import (ca, crl, deployment, init, issue, jobs, ldap, micca, monitor, phone, phones, renew, report, serve,
               service, template, trust, workqueue)

COMMANDS = [init, ca, crl, trust, service, issue, serve, phones, phone, micca, workqueue, jobs, monitor, renew,
            deployment, template, ldap, report]


class Output:
    """Writes results for people (text) or programs (``--json``)."""

    def __init__(self, as_json: bool, stream=None, errors=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def result(self, data, text: str | None = None) -> None:
        if self.as_json:
            self.stream.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        elif text is not None:
            self.line(text)

    def warning(self, text: str) -> None:
        """A warning on standard error (results stay alone on standard output)."""
        self.errors.write(f"opencapf: warning: {text}\n")
        self.errors.flush()

    def error(self, text: str) -> None:
        self.errors.write(f"opencapf: error: {text}\n")
        self.errors.flush()


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2, like argparse, but never a traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


# The global options; ``suppress`` leaves an option out of the namespace unless it is given.
GLOBAL_OPTIONS = ("--store", "--state-dir", "--json", "--verbose")


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The options every command takes, before its verb (on the top parser, with their defaults) or
    after it (on every verb's parser, where an option given overrides the same option given before)."""
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--store", metavar="PATH", default=default(None),
                        help="store location (SQLite file or postgresql:// connection string); default "
                             "$OPENCAPF_STORE or the standard path")
    parser.add_argument("--state-dir", metavar="DIR", type=_state_dir, default=default(None),
                        help="directory of secret.key and keys/ (default $OPENCAPF_STATE_DIR, else beside an SQLite "
                             "store, else the standard path); every host sharing a PostgreSQL store needs the same")
    parser.add_argument("--json", action="store_true", default=default(False), help="print results as JSON")
    parser.add_argument("-v", "--verbose", action="count", default=default(0), help="more log output (repeatable)")


class _VerbParser(_Parser):
    """The parser of a verb (and of its actions, which verbs create with ``type(parser)``): it takes
    the global options too, so ``opencapf phones list --json`` means ``opencapf --json phones list``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _add_global_options(self, suppress=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opencapf",
        description="opencapf CAPF engine: store, CA core, CAPF protocol service and tools.",
    )
    parser.add_argument("--version", action="version", version=f"opencapf {__version__}")
    _add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_VerbParser)
    subparsers.required = True
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def _state_dir(text: str) -> str:
    """The argparse ``type`` of ``--state-dir``: an absolute path (a daemon changes its directory), not a
    file, not writable by the group or others."""
    path = os.path.abspath(text.strip()) if text.strip() else ""
    if not path:
        raise argparse.ArgumentTypeError("must name a directory, got ''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"must be a directory, got {text!r} (not a directory)")
    try:
        check_private_location(path, "state directory")
    except CapfError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.state_dir:
        # Every store this process opens (and the service's worker processes, which inherit it) keeps
        # its key files there, exactly as with $OPENCAPF_STATE_DIR.
        os.environ[ENV_STATE_DIR] = args.state_dir
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    output = Output(args.json)
    try:
        return args.handler(args, output) or 0
    except CapfError as exc:
        output.error(str(exc))
        return 1
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
    except OSError as exc:
        output.error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return 1

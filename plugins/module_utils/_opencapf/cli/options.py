# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument types of the command line taken from the engine's limit table (``vocabulary.LIMITS``).

A value out of range is a usage error: argparse prints ``argument --OPTION: RULE, got VALUE`` and
exits with status 2, before anything is opened or started.
"""

from __future__ import annotations

import argparse

from .. import vocabulary as v
from ..errors import ValidationError


def bounded(name: str):
    """The argparse ``type`` of an option whose range is ``vocabulary.LIMITS[name]``."""

    def convert(text: str):
        try:
            return v.check_limit(name, text.strip())
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.rule}, got {text!r}") from None

    convert.limit = name
    convert.__name__ = name  # argparse names the type in some messages
    return convert


def address(text: str) -> str:
    """The argparse ``type`` of an IP address option."""
    try:
        return v.check_address(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.rule}, got {text!r}") from None


def host_port(text: str) -> str:
    """The argparse ``type`` of an ``IP-ADDRESS:PORT`` option ("" for none)."""
    try:
        return v.check_host_port(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.rule}, got {text!r}") from None


def clock_or_earlier(would: str):
    """The argparse ``type`` of a ``--now`` that makes a command act as at an earlier time: an ISO 8601
    time no later than this host's clock (to the second). What the command records or sends (a job run,
    an operation lapsed, a monitor check and its mail, renewals scheduled) is then true of that time; a
    time to come would record what has not happened. ``would`` says what, in the refusal: "a time to
    come would ``would``"."""

    def convert(text: str) -> str:
        try:
            moment = v.parse_utc(text, "--now")
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.rule}, got {text!r}") from None
        clock = v.utc_now()
        if moment > clock:
            raise argparse.ArgumentTypeError(
                f"must not be later than this host's clock ({v.format_utc(clock)}): a time to come would {would}, "
                f"got {text!r}")
        return v.format_utc(moment)

    convert.__name__ = "clock_or_earlier"  # argparse names the type in some messages
    return convert


def limit_help(name: str) -> str:
    """The range of ``LIMITS[name]`` for an option's help text, e.g. ``0.5-300 seconds``."""
    limit = v.LIMITS[name]
    low, high = limit.bounds
    return f"{low}-{high}{limit.unit}"

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


def limit_help(name: str) -> str:
    """The range of ``LIMITS[name]`` for an option's help text, e.g. ``0.5-300 seconds``."""
    limit = v.LIMITS[name]
    low, high = limit.bounds
    return f"{low}-{high}{limit.unit}"

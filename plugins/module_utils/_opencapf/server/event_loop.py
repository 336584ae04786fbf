# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event loop the CAPF service runs on: the standard asyncio loop or uvloop.

uvloop (libuv, its event loop written in C) is an optional accelerator: the
``event_loop`` service parameter (and ``serve --event-loop``) choose ``auto`` (uvloop when it is
installed, else asyncio), ``asyncio`` or ``uvloop`` (refused with a one-line error when it is not
installed). The driver above the loop (``service``, ``tls_link``: TLS over a non-blocking
``SSLSocket``, readiness from the loop's ``add_reader``/``add_writer``) and the sans-I/O protocol
above it are the same on both; docs/benchmarks.md ("I/O driver", "TLS driver over SSLSocket") has
what each costs per enrolment.
"""

from __future__ import annotations

import asyncio
import importlib

from .. import vocabulary as v
from ..errors import ValidationError

UVLOOP_PIN = "uvloop==0.23.0"  # requirements/runtime.txt


def _uvloop():
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def resolve(choice: str, field: str = "event_loop") -> str:
    """The loop ``choice`` (auto, asyncio or uvloop) names on this host: ``asyncio`` or ``uvloop``."""
    v.check_choice(field, choice, v.EVENT_LOOPS)
    if choice == "asyncio":
        return "asyncio"
    if _uvloop() is not None:
        return "uvloop"
    if choice == "uvloop":
        raise ValidationError(field, f"uvloop is not installed on this host (pip install {UVLOOP_PIN}), "
                              "choose auto or asyncio", choice)
    return "asyncio"


def factory(name: str):
    """A new event loop of ``name`` (``asyncio`` or ``uvloop``, as ``resolve`` gives), for ``asyncio.Runner``."""
    if name == "uvloop":
        module = _uvloop()
        if module is None:
            raise ValidationError("event_loop", f"uvloop is not installed on this host (pip install {UVLOOP_PIN}), "
                                  "choose auto or asyncio", name)
        return module.new_event_loop
    return asyncio.new_event_loop


def run(main, name: str):
    """Run the coroutine ``main`` to its end on a new event loop of ``name``; return its result."""
    with asyncio.Runner(loop_factory=factory(name)) as runner:
        return runner.run(main)


def running() -> str:
    """The kind of the running event loop: ``uvloop`` or ``asyncio``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


__all__ = ["resolve", "factory", "run", "running"]

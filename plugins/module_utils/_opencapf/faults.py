# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named crash points for fault-injection tests.

The engine calls ``checkpoint(name)`` at the places where a crash would hurt most (between the
steps of a transaction, between a commit and the message that tells the phone about it). Each
call does nothing at all unless the environment variable ``OPENCAPF_CRASH_AT`` was set when this
process first reached a checkpoint; the variable is read once, and without it every checkpoint
is one dictionary lookup that returns. With it, the process kills itself with SIGKILL — no
``finally`` blocks, no rollback, no flushing: exactly what a power cut or ``kill -9`` does — at
the chosen pass of a chosen point:

- ``OPENCAPF_CRASH_AT="lsc.signed:3"``: at the 3rd pass of ``lsc.signed``;
- ``"lsc.signed:3,migration.statement:1"``: at whichever of these comes first.

The crash-safety test (tests/e2e/test_crash_faults.py, docs/reliability.md) sets the variable
for the CAPF service it restarts; nothing else in the collection does. The points are listed in
``POINTS`` (a name outside the list is refused, so that a typo cannot make a test pass).
"""

from __future__ import annotations

import os
import signal
import threading

from .errors import ValidationError

ENV_CRASH_AT = "OPENCAPF_CRASH_AT"

POINTS = {
    "lsc.signed": "LSC signed and its row written, transaction not yet committed",
    "lsc.committed": "LSC committed, STORE_CERTIFICATE_REQUEST not yet sent to the phone",
    "install.recording": "phone acknowledged the LSC; installed status written, operation result not yet",
    "install.committed": "install committed, session record not yet written",
    "session.recorded": "session record committed, END_SESSION not yet sent",
    "migration.statement": "a migration statement ran, the migration's transaction not yet committed",
    "bulk.updated": "bulk update wrote the phones, inserts and audit events not yet, nothing committed",
}

_plan: dict[str, int] | None = None
_passes: dict[str, int] = {}
_lock = threading.Lock()


def _parse(value: str) -> dict[str, int]:
    plan = {}
    for item in value.split(","):
        name, _sep, count = item.strip().partition(":")
        if name not in POINTS:
            raise ValidationError(ENV_CRASH_AT, f"names unknown crash point {name!r} (known: {', '.join(POINTS)})")
        if not count.isdigit() or int(count) < 1:
            raise ValidationError(ENV_CRASH_AT, f"needs NAME:N with N >= 1, got {item.strip()!r}")
        plan[name] = int(count)
    return plan


def checkpoint(name: str) -> None:
    """Die here (SIGKILL) when ``OPENCAPF_CRASH_AT`` asks for this pass of ``name``; else nothing."""
    global _plan  # pylint: disable=global-statement
    if _plan is None:
        value = os.environ.get(ENV_CRASH_AT, "")
        _plan = _parse(value) if value else {}
    if not _plan or name not in _plan:
        return
    with _lock:  # store work runs on several threads: count every pass once
        _passes[name] = _passes.get(name, 0) + 1
        due = _passes[name] == _plan[name]
    if due:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV_CRASH_AT", "POINTS", "checkpoint"]

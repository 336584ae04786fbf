# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled jobs and operation deadlines.

A job with ``run_at`` in the future is stored as ``scheduled`` in ``jobs``; its spec holds no
secret (a shared authentication string is kept encrypted in ``secrets`` until the job has run).
``run_due(store, now)`` is what the daemon calls periodically (and ``opencapf jobs run-due`` by
hand or from cron): it runs every due job, and lets pending operations whose deadline passed
lapse.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from . import secretbox
from .errors import CapfError, NotFoundError
from .results import converged
from .store import Store, audit, csrs, jobs, phones
from .vocabulary import JOB_STATUSES, check_choice, format_utc, parse_utc, utc_now


def _secret_name(job_id: int) -> str:
    return f"job.{job_id}.authentication_string"


def _view(row: dict) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "status": row["status"], "spec": row["spec"],
            "result": row["result"], "run_at": row["run_at"], "created_at": row["created_at"],
            "started_at": row["started_at"], "finished_at": row["finished_at"]}


def list_jobs(tx, status=None, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs, newest first (optionally one status)."""
    if status is not None:
        check_choice("status", status, JOB_STATUSES)
    return [_view(row) for row in jobs.newest(tx, status, limit)]


def schedule(store: Store, kind: str, spec: dict, run_at: _dt.datetime, *, secret_value: str | None = None,
             check_mode: bool = False) -> dict[str, Any]:
    """Store a job for later, idempotently: an identical scheduled job (same kind, spec and time)
    is reused, its shared secret updated when it differs."""
    when = format_utc(run_at)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        row = jobs.find_scheduled(tx, kind, spec, when)
        if row is not None:
            name = _secret_name(row["id"])
            same_secret = (secretbox.equals(tx, secret, name, secret_value) if secret_value is not None
                           else not secretbox.exists(tx, name))
            if same_secret:
                return converged(False, _view(row), _view(row), job=_view(row), counts=None,
                                 authentication_strings=[])
            if not check_mode:
                if secret_value is None:
                    secretbox.delete(tx, name)
                else:
                    secretbox.put(tx, secret, name, secret_value)
                audit.record(tx, store.actor, "job.secret", str(row["id"]))
            return converged(True, _view(row), _view(row), job=_view(row), counts=None, authentication_strings=[])
        planned = {"id": None, "kind": kind, "status": "scheduled", "spec": spec, "result": {}, "run_at": when,
                   "created_at": None, "started_at": None, "finished_at": None}
        if check_mode:
            return converged(True, None, planned, job=planned, counts=None, authentication_strings=[])
        job_id = jobs.schedule(tx, kind, spec, when)
        if secret_value is not None:
            secretbox.put(tx, secret, _secret_name(job_id), secret_value)
        audit.record(tx, store.actor, "job.schedule", str(job_id), kind=kind, run_at=when)
        job = _view(jobs.get(tx, job_id))
    return converged(True, None, job, job=job, counts=None, authentication_strings=[])


def cancel(store: Store, job_id: int, check_mode: bool = False) -> dict[str, Any]:
    """Cancel a scheduled job (a job that ran or is running stays as it is)."""
    with store.transaction(write=not check_mode) as tx:
        row = jobs.get(tx, job_id)
        if row is None:
            raise NotFoundError(f"job {job_id} does not exist")
        if row["status"] != "scheduled":
            return converged(False, _view(row), _view(row), job=_view(row))
        if not check_mode:
            jobs.mark_cancelled(tx, job_id)
            secretbox.delete(tx, _secret_name(job_id))
            audit.record(tx, store.actor, "job.cancel", str(job_id))
        after = dict(_view(row), status="cancelled")
    return converged(True, _view(row), after, job=after)


def lapse_deadlines(store: Store, now: _dt.datetime) -> list[str]:
    """Pending operations whose ``operation_completes_by`` has passed become ``lapsed``; their CSRs
    still at a third-party CA are failed with them (as when an operator withdraws the operation: a
    CA's later answer is stale, never the phone's waiting LSC), each with a ``csr.failed`` event."""
    moment = format_utc(now)
    with store.transaction() as tx:
        lapsed = phones.lapse_overdue(tx, moment)
        if lapsed:
            audit.record(tx, store.actor, "phone.lapse", "phones", count=len(lapsed), at=moment)
            csrs.withdraw_pending(tx, store.actor, {row["id"]: row["name"] for row in lapsed}, csrs.LAPSED)
    return [row["name"] for row in lapsed]


def run_due(store: Store, now=None) -> dict[str, Any]:
    """Run every scheduled job due at ``now`` (default: the current time), oldest first."""
    from . import bulk  # bulk schedules through this module

    moment = parse_utc(now, "now") if now is not None else utc_now()
    when = format_utc(moment)
    ran = []
    while True:
        with store.transaction() as tx:
            row = jobs.next_due(tx, when)
            if row is None:
                break
            jobs.mark_running(tx, row["id"])
            shared = secretbox.get(tx, store.secret(), _secret_name(row["id"]))
        job = _view(row)
        try:
            if job["kind"] != bulk.JOB_KIND:
                raise CapfError(f"job kind {job['kind']!r} is not known to this engine")
            outcome = bulk.run(store, job["spec"], shared_string=shared)
            status, result = "succeeded", {"counts": outcome["counts"], "generated": len(outcome["authentication_strings"]),
                                           "strings_file": outcome["strings_file"]}
        except CapfError as exc:
            status, result = "failed", {"error": str(exc)}
        with store.transaction() as tx:
            jobs.mark_finished(tx, row["id"], status, result)
            secretbox.delete(tx, _secret_name(row["id"]))
            audit.record(tx, store.actor, f"job.{status}", str(row["id"]), kind=job["kind"])
        ran.append({"id": row["id"], "status": status, "result": result})
    lapsed = lapse_deadlines(store, moment)
    return {"now": when, "jobs": ran, "lapsed": lapsed}

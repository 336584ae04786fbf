# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled jobs and operation deadlines.

A job with ``run_at`` in the future is stored as ``scheduled`` in ``jobs``; its spec holds no
secret (a shared authentication string is kept encrypted in ``secrets`` until the job has run).
``run_due(store, now)`` is what the daemon calls periodically (and ``opencapf jobs run-due`` by
hand or from cron): it runs every due job, each claimed, run and recorded in one transaction, and
lets pending operations whose deadline passed lapse. ``now`` is the caller's clock: the daemon gives
none (this host's), ``opencapf jobs run-due --now`` only a time not later than this host's clock
(``cli/options.clock_or_earlier``), since what a run records (a job run, an operation lapsed) must
be true of its time.
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
    """A job as listed: its ``result`` is null until it has run (scheduled, or cancelled before)."""
    return {"id": row["id"], "kind": row["kind"], "status": row["status"], "spec": row["spec"],
            "result": row["result"] or None, "run_at": row["run_at"], "created_at": row["created_at"],
            "started_at": row["started_at"], "finished_at": row["finished_at"]}


def list_jobs(tx, status=None, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs, newest first (optionally one status)."""
    if status is not None:
        check_choice("status", status, JOB_STATUSES)
    return [_view(row) for row in jobs.newest(tx, status, limit)]


def schedule(store: Store, kind: str, spec: dict, run_at: _dt.datetime, *, secret_value: str | None = None,
             check_mode: bool = False) -> dict[str, Any]:
    """Store a job for later, idempotently: an identical scheduled job (same kind, spec and time)
    is reused, its shared secret replaced when one is given and differs. A declaration without a
    secret keeps the stored one (a playbook run again need not repeat a ``no_log`` value); to drop
    it, cancel the job and declare it again without one."""
    when = format_utc(run_at)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        row = jobs.find_scheduled(tx, kind, spec, when)
        if row is not None:
            name = _secret_name(row["id"])
            if secret_value is None or secretbox.equals(tx, secret, name, secret_value):
                return converged(False, _view(row), _view(row), job=_view(row), counts=None,
                                 authentication_strings=[])
            if not check_mode:
                secretbox.put(tx, secret, name, secret_value)
                audit.record(tx, store.actor, "job.secret", str(row["id"]))
            return converged(True, _view(row), _view(row), job=_view(row), counts=None, authentication_strings=[])
        planned = {"id": None, "kind": kind, "status": "scheduled", "spec": spec, "result": None, "run_at": when,
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
    """Operations whose ``operation_completes_by`` has passed (pending, or failed and waiting for another
    attempt: ``phones.overdue``) become ``lapsed``; their CSRs still at a third-party CA are failed with
    them (as when an operator withdraws the operation: a CA's later answer is stale, never the phone's
    waiting LSC), each with a ``csr.failed`` event; each phone's lapse has its ``phone.operation_lapsed``
    event (``phones.lapsed_event``, as a refused session records it)."""
    moment = format_utc(now)
    with store.transaction() as tx:
        lapsed = phones.lapse_overdue(tx, moment)
        if lapsed:
            audit.record_many(tx, store.actor, moment, [phones.lapsed_event(row["name"], row["operation"])
                                                        for row in lapsed])
            csrs.withdraw_pending(tx, store.actor, {row["id"]: row["name"] for row in lapsed}, csrs.LAPSED)
    return [row["name"] for row in lapsed]


def run_due(store: Store, now=None) -> dict[str, Any]:
    """Run every scheduled job due at ``now`` (default: the current time), oldest first."""
    moment = parse_utc(now, "now") if now is not None else utc_now()
    when = format_utc(moment)
    ran = []
    while True:
        outcome = _run_next(store, when)
        if outcome is None:
            break
        if outcome["status"] is not None:
            ran.append(outcome)
    lapsed = lapse_deadlines(store, moment)
    return {"now": when, "jobs": ran, "lapsed": lapsed}


def _run_next(store: Store, when: str) -> dict[str, Any] | None:
    """Claim, run and record the next job due at ``when`` in one write transaction, so that a job is
    never seen half done: killed in the middle, it changed nothing and is still due (another process
    runs it once); finished, its changes, result and the removal of its secret commit together. A
    job that fails changes nothing and is recorded ``failed`` with the reason in a transaction of its
    own (unless meanwhile cancelled or run elsewhere: then ``status`` is None). None: nothing due."""
    job_id = kind = started = None
    try:
        with store.transaction() as tx:
            row = jobs.next_due(tx, when)
            if row is None:
                return None
            job_id, kind, started = row["id"], row["kind"], format_utc(utc_now())
            result = _perform(store, tx, row, when)
            _record(tx, store, job_id, kind, "succeeded", result, started)
        return {"id": job_id, "status": "succeeded", "result": result}
    except CapfError as exc:
        if job_id is None:  # the store is not there to be asked: nothing was claimed
            raise
        failure: BaseException | None = None
        result = {"error": str(exc)}
    except Exception as exc:  # a defect of ours: the job fails with its name, the caller logs the traceback
        if job_id is None:
            raise
        failure = exc
        result = {"error": f"internal error ({type(exc).__name__}), see the log of the process that ran the job"}
    with store.transaction() as tx:
        recorded = _record(tx, store, job_id, kind, "failed", result, started)
    if failure is not None:
        raise failure
    return {"id": job_id, "status": "failed" if recorded else None, "result": result}


def _perform(store: Store, tx, row: dict, when: str) -> dict[str, Any]:
    """Do what job ``row`` asks in the caller's transaction at ``when``; return its result (with the warning that
    names the phones of ``query.names`` no longer in the store: checked at submission, they may have
    been removed since)."""
    from . import bulk  # bulk schedules through this module

    if row["kind"] != bulk.JOB_KIND:
        raise CapfError(f"job kind {row['kind']!r} is not known to this engine")
    shared = secretbox.get(tx, store.secret(), _secret_name(row["id"]))
    outcome = bulk.run(store, row["spec"], shared_string=shared, tx=tx, now=when)
    return {"counts": outcome["counts"], "generated": len(outcome["authentication_strings"]),
            "strings_file": outcome["strings_file"], "warnings": outcome["warnings"]}


def _record(tx, store: Store, job_id: int, kind: str, status: str, result: dict, started: str) -> bool:
    """Record a scheduled job as finished in ``status``, drop its secret and audit it (a failed job's
    event with its ``reason``, the error of its result); False when the job is no longer scheduled
    (nothing is written then)."""
    if not jobs.finish_scheduled(tx, job_id, status, result, started):
        return False
    secretbox.delete(tx, _secret_name(job_id))
    details = {"reason": result["error"]} if status == "failed" else {}
    audit.record(tx, store.actor, f"job.{status}", str(job_id), kind=kind, **details)
    return True

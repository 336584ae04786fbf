# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduler inside the CAPF service: due jobs run and passed deadlines lapse with nobody
typing a command.

Every serving process runs this loop. At each tick (every ``scheduler_interval_seconds``, read
again each time, and once at start so that what fell due while the service was down runs at once)
it asks the store for the lead of the ``scheduler`` duty (``Store.try_lead``): of all the
processes serving one store, worker processes and separate ``serve`` processes alike, exactly one
leads and settles the operations left ``in_progress`` by sessions whose service died
(``decider.settle_abandoned``: past their time bound no process serves them), runs
``scheduler.run_due`` (due jobs, then passed deadlines lapse: a settled operation's too), syncs the
LDAP directories whose scheduled sync is due (``directory.run_due``), then revokes expired LSCs
and signs a new CRL when one is due (``revocation.run_duty``), then schedules the automatic
renewals that are due (``renewal.run``, when ``renew_before_days`` is set), then removes the session
records older than ``session_retention_days`` in bounded batches (``retention``); when it ends, the next
process to tick takes over. Each duty runs whatever became of the ones before it (a failure is
logged, and the tick goes on); a store that cannot be reached ends the tick at its first read. A duty
runs only while the lead is held: before each duty the process asks the store whether it still holds
the lead (``Store.holds_lead``: a PostgreSQL lead goes with a lost connection, and another node may
take it at once), and each of its writes verifies it on the connection it commits on
(``Store.leading``); a lead lost part-way through a tick skips the rest of the tick's duties, with one
log line, and the next tick asks for it again. Every
process keeps its ``crl_path`` file current. The leader of the ``monitor`` duty (taken the same way)
runs the certificate monitor when its interval has passed (``monitor.run_if_due``). A job is
claimed, run and recorded in one write transaction (``scheduler.run_due``), so ``opencapf jobs
run-due`` typed meanwhile cannot run it a second time, and a process killed during a job leaves it
due and unchanged.

The work runs in a thread of its own on a store connection of its own (audit actor
``scheduler``): a bulk job over a large fleet neither waits behind nor holds up the sessions on
the event loop, and reads on the service's connection go on while it writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading

from .. import directory, monitor, parameters, renewal, retention, revocation, scheduler
from ..errors import CapfError
from ..store import Store, open_store
from ..store import service as service_records
from ..vocabulary import utc_now
from .decider import settle_abandoned

log = logging.getLogger("opencapf.server")
LEAD = "scheduler"
MONITOR_LEAD = monitor.LEAD
ACTOR = "scheduler"
INTERVAL_PARAMETER = "scheduler_interval_seconds"
LISTED_NAMES = 20  # phones named in a lapse log line; the audit event has the count
# The longest a stopping service waits for its store work under way before it ends it (``Backend.abort``: a host
# that does not answer would hold the stop until the network heals): one deadline, this long after the stop began,
# for all of it (the scheduler's tick, the enrolment service's pass, its store threads' work; ``service.serve``),
# so a stop takes about this long plus the sessions' grace at most. Work ended so is rolled back: a job is left due.
STOP_STORE_WAIT_SECONDS = 10


class Scheduling:
    """One process's part in the scheduler: its own store connection, opened at the first tick.
    ``clock`` gives the time the revocation, renewal and monitor duties work at (tests travel in time with it)."""

    def __init__(self, store: Store, clock=utc_now):
        self._location, self._state_dir = store.location, store.state_dir
        self._store: Store | None = None
        self._clock = clock
        self._crl_file = revocation.CrlFile()
        self._held_back = 0  # the renewals held back at the last run (logged when the count changes)
        self._retention = retention.Retention()
        # Set once the process is stopping: it takes up no duty it does not lead already (when every
        # worker of a service stops, the one that stops last would otherwise take the lead the first
        # gave up, and start duties only to end them).
        self.stopping = threading.Event()
        self._held: set[str] = set()  # the duties this process leads
        self._aborted = False  # ``abort``: the tick's store work ends at once

    def tick(self) -> int:
        """Run what is due when this process leads; return the seconds until the next tick."""
        if self._store is None:
            self._store = open_store(self._location, state_dir=self._state_dir, actor=ACTOR, create=False)
            if self._aborted:
                self._store.backend.abort()
        with self._store.read() as tx:
            interval = int(service_records.value(tx, INTERVAL_PARAMETER))
        led = self.leading
        if self._takes(LEAD):
            if not led:
                log.info("scheduler: this process (pid %d) runs the scheduled jobs and lapses passed deadlines, "
                         "every %d s", os.getpid(), interval)
            # Abandoned operations first: settled ``failed``, those whose deadline has passed lapse in the
            # same tick, as every view reports them (``phones.reported_operation_status``).
            self._lead_duties([
                ("abandoned operations", lambda: _log_settled(settle_abandoned(self._store))),
                ("scheduled jobs", lambda: _log(scheduler.run_due(self._store))),
                ("directory syncs", lambda: _log_directories(directory.run_due(self._store, self._clock()))),
                ("revocation and CRLs", lambda: _log_revocation(revocation.run_duty(self._store, self._clock()))),
                ("automatic renewal", self._renew),
                ("session retention", lambda: _log_retention(self._retention.run(self._store, self._clock()))),
            ])
        _duty("CRL file", lambda: self._crl_file.publish(self._store, self._clock()))  # every process keeps its own files current
        _duty("certificate monitor", self._monitor)
        return interval

    @property
    def leading(self) -> bool:
        """Whether this process leads the scheduler's duties (as the last tick found)."""
        return LEAD in self._held

    def _takes(self, duty: str) -> bool:
        """Whether this process leads ``duty`` (taking the lead when nobody holds it, unless stopping)."""
        if self.stopping.is_set() and duty not in self._held:
            return False
        if self._store.try_lead(duty):
            self._held.add(duty)
            return True
        self._held.discard(duty)
        return False

    def _lead_duties(self, duties: list) -> None:
        """Run the scheduler's duties, each only while this process still holds the lead (the store
        connection may be lost part-way through a tick, and the lead with it), each write under it
        (``Store.leading``): once lost, the rest of the tick's duties are skipped, with one log line."""
        for index, (name, run) in enumerate(duties):
            if not self._still_leads(LEAD, [item[0] for item in duties[index:]]):
                return
            with self._store.leading(LEAD):
                _duty(name, run)

    def _still_leads(self, duty: str, skipped: list[str]) -> bool:
        """Whether this process still holds the lead of ``duty``; when not, say which work it skips."""
        if self._store.holds_lead(duty):
            return True
        self._held.discard(duty)
        log.warning("scheduler: this process (pid %d) lost the %s lead during the tick (its store connection was lost, "
                    "and the lead with it: another process may lead now); skipped: %s; the lead is asked for again "
                    "at the next tick", os.getpid(), duty, ", ".join(skipped))
        return False

    def _renew(self) -> None:
        self._held_back = _log_renewal(renewal.run(self._store, self._clock()), self._held_back)

    def _monitor(self) -> None:
        """Run the certificate monitor when it is due and this process leads it; a failure to send
        mail is recorded by the monitor, never raised, and nothing here stops the service."""
        if not self._takes(MONITOR_LEAD):
            return
        with self._store.leading(MONITOR_LEAD):
            run = monitor.run_if_due(self._store, self._clock())
        if run is not None:
            level = logging.WARNING if run["result"] in ("failed", "unknown") else logging.INFO
            log.log(level, "monitor: checked the certificates: %s (%d found, %d warning(s) due, %d mail(s) sent)%s",
                    run["result"], run["found"], run["warnings"], run["mails_sent"],
                    f": {run['error']}" if run["error"] else "")

    def abort(self) -> None:
        """End the store work of the tick under way at once, and of every later one (from the event loop: the
        process is stopping and the tick has not ended within ``STOP_STORE_WAIT_SECONDS``)."""
        self._aborted = True
        if self._store is not None:
            self._store.backend.abort()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _duty(name: str, run) -> None:
    """Run one duty of a tick: its failure is logged and the tick goes on with the next, so that a job,
    a directory or a defect that keeps failing (a secret that no longer decrypts is a ``StoreError``
    too) never stops the CRLs, the renewals or the monitor. A store that cannot be reached at all ends
    the tick before its first duty, at the tick's first read (``run`` logs it once)."""
    try:
        run()
    except CapfError as exc:
        log.warning("scheduler: %s: %s", name, exc)
    except Exception:  # pylint: disable=broad-exception-caught  # a defect of ours: logged with its traceback
        log.exception("scheduler: %s: internal error", name)


def _log(result: dict) -> None:
    for job in result["jobs"]:
        level = logging.INFO if job["status"] == "succeeded" else logging.WARNING
        log.log(level, "scheduler: job %d %s: %s", job["id"], job["status"], job["result"])
    lapsed = result["lapsed"]
    if lapsed:
        more = f" and {len(lapsed) - LISTED_NAMES} more" if len(lapsed) > LISTED_NAMES else ""
        log.info("scheduler: %d operation(s) lapsed, their deadline passed: %s%s", len(lapsed),
                 ", ".join(lapsed[:LISTED_NAMES]), more)


def _log_settled(names: list) -> None:
    if names:
        more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
        log.warning("scheduler: %d operation(s) left in progress by a session that ended without a result (its "
                    "service stopped mid-session) settled as failed: %s%s", len(names), ", ".join(names[:LISTED_NAMES]),
                    more)


def _log_directories(outcomes: list) -> None:
    for outcome in outcomes:
        if "error" in outcome:
            log.warning("scheduler: directory %s: sync failed, retried after its interval: %s", outcome["name"],
                        outcome["error"])
            continue
        if outcome.get("superseded"):
            log.info("scheduler: directory %s: sync superseded: a sync that read the directory later applied "
                     "first, or another sync replaced its stored configuration; this one applied nothing",
                     outcome["name"])
            continue
        log.info("scheduler: directory %s synced: %s", outcome["name"],
                 ", ".join(f"{count} {key}" for key, count in outcome["devices"].items()))
        for warning in outcome["warnings"]:
            log.warning("scheduler: %s", warning)


def _log_renewal(result: dict, held_before: int = 0) -> int:
    """Log a renewal run; return how many renewals it held back (a change of that count is logged)."""
    held = result.get("held_back", {"count": 0})
    if held["count"] and held["count"] != held_before:
        shown = held["names"][:LISTED_NAMES]
        log.warning("scheduler: automatic renewal holds back %d phone(s) whose LSC ends with the CAPF certificate "
                    "(at %s): a new LSC would end no later; regenerate or replace the CAPF certificate: %s%s",
                    held["count"], held["capf_not_after"], ", ".join(shown),
                    f" and {held['count'] - len(shown)} more" if held["count"] > len(shown) else "")
    names = [item["name"] for item in result["scheduled"]]
    if names:
        more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
        log.info("scheduler: automatic renewal scheduled install_upgrade for %d phone(s) whose LSC expires before "
                 "%s: %s%s%s", len(names), result["expires_before"], ", ".join(names[:LISTED_NAMES]), more,
                 "; more are due and wait for the next 24 hours (renew_max_per_day)" if result["more_due"] else "")
    return held["count"]


def _log_retention(result: dict | None) -> None:
    if result and (result["sessions"] or result["events"]):
        log.info("scheduler: removed %d session record(s) and %d session audit event(s) from before %s "
                 "(session_retention_days %d)%s", result["sessions"], result["events"], result["before"], result["days"],
                 "; older ones remain for the next ticks" if result["more"] else "")


def _log_revocation(result: dict) -> None:
    expired = result["expired"]
    if expired:
        names = [row["device_name"] for row in expired]
        more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
        log.info("scheduler: %d expired LSC(s) revoked (revoke_after_expiry): %s%s", len(names),
                 ", ".join(names[:LISTED_NAMES]), more)
    for crl in result["crls"]:
        log.info("scheduler: CRL %d of the %s CAPF certificate %s signed (%s): %d revoked LSC(s), next update %s",
                 crl["number"], "active" if crl["active"] else "retired", crl["common_name"], crl["reason"],
                 crl["entries"], crl["next_update"])
        warning = revocation.clock_warning(crl)
        if warning:
            log.warning("scheduler: %s", warning)


async def run(store: Store, stop_event: asyncio.Event) -> None:
    """Tick until ``stop_event`` is set; a tick under way when it is set finishes first, within
    ``STOP_STORE_WAIT_SECONDS``: then its store work is ended (``Scheduling.abort``)."""
    part = Scheduling(store)
    thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="capf-scheduler")
    loop = asyncio.get_running_loop()
    interval = parameters.PARAMETERS[INTERVAL_PARAMETER].default  # until the first tick has read it
    stopping = asyncio.ensure_future(_mark_stopping(stop_event, part))  # also while a tick is under way
    try:
        while not stop_event.is_set():
            try:
                interval = await loop.run_in_executor(thread, part.tick)
            except CapfError as exc:  # the store may be busy or away for a while: keep serving phones
                log.warning("scheduler: %s", exc)
            except Exception:  # a defect of ours: log it with its traceback and keep serving phones
                log.exception("scheduler: internal error")
            try:
                await asyncio.wait_for(stop_event.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        stopping.cancel()
        await loop.run_in_executor(thread, part.close)
        thread.shutdown(wait=True)


async def _mark_stopping(stop_event: asyncio.Event, part: Scheduling) -> None:
    await stop_event.wait()
    part.stopping.set()
    await asyncio.sleep(STOP_STORE_WAIT_SECONDS)  # cancelled when the tick under way ends first
    log.warning("scheduler: the tick under way did not end within %d s of the stop (its store's host may not be "
                "answering): its store work is ended, and rolled back", STOP_STORE_WAIT_SECONDS)
    part.abort()


__all__ = ["LEAD", "MONITOR_LEAD", "STOP_STORE_WAIT_SECONDS", "Scheduling", "run"]

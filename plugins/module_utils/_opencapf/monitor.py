# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The certificate monitor: warns by e-mail before certificates expire.

``check(store, now)`` looks at every phone's installed LSC, every CAPF certificate (the active one,
and the retired ones that still sign LSCs phones hold until they expire) and the certificates of
both trust stores. A certificate *reaches* a threshold of ``monitor_warn_days`` when it has at
most that many days left, and threshold 0 once it has expired (retired CAPF certificates excepted:
nothing new depends on them). A check that finds certificates whose newest threshold was not warned
about yet (or, with ``monitor_resend: every_check``, any reached threshold) sends ONE message to
``monitor_recipients``: the counts, the soonest expiries and a CSV attachment of every affected
certificate and device. A warning is mailed at most once: the warnings and the run (result
``unknown``) are recorded before the message is sent, its outcome after; a relay that did not take the
message frees its warnings again, so a mail that could not be sent is sent by a later check. When the
outcome cannot be recorded (the store connection lost while the mail was sent, and perhaps the
``monitor`` lead with it, which another node may take at once), the warnings stay recorded as sent and
the run ``unknown``: logged, shown by ``status``, never mailed a second time.

The message goes through the standard library's SMTP client, over STARTTLS, implicit TLS or a plain
connection, with an optional login whose password is a sealed secret of the store. Each send is
tried ``SEND_ATTEMPTS`` times with a doubling pause, unless the relay's answer to the message itself
was lost (it may have taken it: the run is ``unknown``, never sent again); a failure is logged,
recorded as the run's ``error`` and never raised: the CAPF service goes on serving phones. The service runs the monitor
from its scheduler (``run_if_due``) every ``monitor_interval_hours``; after a failed run, again
after ``RETRY_AFTER_MINUTES`` (doubling, at most the interval). ``opencapf monitor run --now`` checks
only as at a time not later than this host's clock (``cli/options.clock_or_earlier``): a check is
recorded, and its days left mailed, as of its ``now``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import logging
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable

from . import secretbox
from .ca.lsc import CAPF_ISSUER
from .errors import StoreError, ValidationError
from .service_config import SMTP_PASSWORD_SECRET
from .store import Store, capf_certificates, certificates, trust
from .store import monitor as records
from .store import service as service_records
from .store.backend import Transaction
from .vocabulary import format_utc, parse_utc, utc_now

log = logging.getLogger("opencapf.monitor")
LEAD = "monitor"  # the duty name (Store.try_lead) of the one process per store that checks and mails

SEND_ATTEMPTS = 3
FIRST_PAUSE_SECONDS = 1.0  # before the second attempt; doubles before each further one
SMTP_TIMEOUT_SECONDS = 30
RETRY_AFTER_MINUTES = 5  # a failed run is tried again after this long, doubling, at most the interval
SOONEST_SHOWN = 10  # certificates listed in the message body; the CSV has them all
FORGET_AFTER_DAYS = 400  # warnings of certificates expired this long ago are forgotten
KINDS = ("lsc", "capf_certificate", "capf-trust", "callmanager-trust")
KIND_TITLES = {"lsc": "phone LSC", "capf_certificate": "CAPF certificate", "capf-trust": "CAPF-trust certificate",
               "callmanager-trust": "CallManager-trust certificate"}
CSV_COLUMNS = ("kind", "device_name", "subject", "serial", "fingerprint", "not_after", "days_left", "threshold",
               "description", "model", "device_pool")
RESULTS = ("sent", "nothing_due", "not_configured", "failed", "unknown")
# The error of a run whose mail's outcome was never recorded (its warnings were, before it was sent).
UNKNOWN_OUTCOME = ("the outcome of this run's mail was never recorded (the store connection was lost, or the process "
                   "ended, while it was sent): it may have been sent; its warnings are recorded as sent and are not "
                   "mailed again: check the recipients' mailbox")


@dataclass(frozen=True)
class Finding:
    """A certificate that reached a threshold."""
    kind: str
    fingerprint: str
    subject: str  # the device name of an LSC, else the certificate's common name
    serial: str
    not_after: str
    days_left: int  # whole days left, rounded down (negative: expired that many days ago)
    thresholds: tuple  # every threshold it reached, largest first; 0 means expired
    device: dict  # description, model and device pool of an LSC's phone

    @property
    def threshold(self) -> int:
        """The newest threshold it reached."""
        return self.thresholds[-1]

    def csv_row(self) -> list:
        return [self.kind, self.subject if self.kind == "lsc" else "", self.subject, self.serial, self.fingerprint,
                self.not_after, self.days_left, self.threshold, self.device.get("description", ""),
                self.device.get("model", ""), self.device.get("device_pool", "")]


def _moment(now) -> _dt.datetime:
    if now is None:
        return utc_now()
    return parse_utc(now, "now")


def _reached(not_after: str, now: _dt.datetime, warn_days: list[int], expiry_counts: bool) -> tuple[int, tuple]:
    left = parse_utc(not_after, "not_after") - now
    days_left = left.days  # floor: 6 days 23 hours left is 6
    # A certificate is valid through its notAfter second (RFC 5280 4.1.2.5): expired only after it.
    if left < _dt.timedelta(0) and not expiry_counts:
        return days_left, ()
    reached = [days for days in warn_days if left <= _dt.timedelta(days=days)]
    if left < _dt.timedelta(0):
        reached.append(0)
    return days_left, tuple(reached)


def _capf_thresholds(tx: Transaction, warn_days: list[int]) -> list[int]:
    """The thresholds of the active CAPF certificate: ``warn_days``, and ``renew_before_days`` when the
    CAPF certificate's LSCs are renewed automatically: from then on automatic renewal holds back the
    phones whose LSC ends with it (a new LSC would end no later, ``renewal``) until it is regenerated
    or replaced, and the operator hears of it when that starts."""
    parameters = service_records.read(tx)
    renew_days = int(parameters["renew_before_days"])
    if not renew_days or parameters["issuer"] != CAPF_ISSUER or renew_days in warn_days:
        return warn_days
    return sorted([*warn_days, renew_days], reverse=True)


def findings(tx: Transaction, now=None, warn_days: list[int] | None = None) -> list[Finding]:
    """Every monitored certificate that reached a threshold at ``now``, soonest expiry first."""
    moment = _moment(now)
    if warn_days is None:
        warn_days = service_records.value(tx, "monitor_warn_days")
    before = format_utc(moment + _dt.timedelta(days=max(warn_days), seconds=1))
    found: list[Finding] = []

    def add(kind, fingerprint, subject, serial, not_after, expiry_counts=True, device=None, days=None):
        days_left, reached = _reached(not_after, moment, days or warn_days, expiry_counts)
        if reached:
            found.append(Finding(kind, fingerprint, subject, serial, not_after, days_left, reached, device or {}))

    forgotten = format_utc(moment - _dt.timedelta(days=FORGET_AFTER_DAYS))
    for row in certificates.watched_lscs_expiring(tx, before, forgotten):
        add("lsc", row["fingerprint"], row["device_name"], row["serial"], row["not_after"],
            device={"description": row["description"], "model": row["model"], "device_pool": row["device_pool"]})
    capf_days = _capf_thresholds(tx, warn_days)
    for row in capf_certificates.expiring(tx, format_utc(moment + _dt.timedelta(days=max(capf_days), seconds=1))):
        add("capf_certificate", row["fingerprint"], row["common_name"], row["serial"], row["not_after"],
            expiry_counts=bool(row["active"]), days=capf_days if row["active"] else None)
    for row in trust.expiring(tx, before):
        add(row["trust_store"], row["fingerprint"], row["common_name"], "", row["not_after"])
    found.sort(key=lambda item: (item.not_after, KINDS.index(item.kind), item.subject))
    return found


def expiring(store: Store, now=None) -> list[dict[str, Any]]:
    """The certificates within the warn window at ``now`` (what capf_info shows), soonest first."""
    with store.read() as tx:
        return expiring_in(tx, now)


def expiring_in(tx: Transaction, now=None) -> list[dict[str, Any]]:
    """``expiring`` inside the caller's transaction."""
    items = findings(tx, now)
    return [{"kind": item.kind, "subject": item.subject, "serial": item.serial, "fingerprint": item.fingerprint,
             "not_after": item.not_after, "days_left": item.days_left, "threshold": item.threshold,
             **({"device_name": item.subject} if item.kind == "lsc" else {})} for item in items]


def _due_warnings(tx: Transaction, items: list[Finding], resend: str) -> list[Finding]:
    if resend == "every_check":
        return list(items)
    sent = records.warned(tx, (item.fingerprint for item in items))
    return [item for item in items if (item.fingerprint, item.threshold) not in sent]


def _settings(tx: Transaction, secret: bytes) -> dict[str, Any]:
    values = service_records.read(tx)
    settings = {name[len("monitor_"):]: value for name, value in values.items() if name.startswith("monitor_")}
    settings["smtp_password"], settings["problem"] = None, ""
    if settings["smtp_username"]:
        try:
            settings["smtp_password"] = secretbox.get(tx, secret, SMTP_PASSWORD_SECRET)
        except secretbox.UndecryptableSecret as exc:  # recorded as the run's error; the service goes on
            settings["problem"] = str(exc)
    return settings


def configured(settings: dict) -> bool:
    """Whether the monitor can send mail: recipients, relay and sender are set."""
    return bool(settings["recipients"] and settings["smtp_host"] and settings["sender"])


# -- the message --------------------------------------------------------------------------------


def _line(text: str, limit: int = 120) -> str:
    """``text`` on one line (names come from certificates and phones), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _when(item: Finding) -> str:
    if item.days_left < 0 or item.threshold == 0:
        return "expired" if item.days_left >= -1 else f"expired {-item.days_left} days ago"
    return f"{item.days_left} day{'s' if item.days_left != 1 else ''} left"


def compose(items: list[Finding], settings: dict, now: _dt.datetime, host: str | None = None) -> EmailMessage:
    """One message about ``items`` (soonest first): counts, the soonest expiries, a CSV of them all."""
    host = host or socket.getfqdn()
    counts = {kind: sum(1 for item in items if item.kind == kind) for kind in KINDS}
    expired = sum(1 for item in items if item.threshold == 0)
    soonest = items[0]
    message = EmailMessage()
    message["Subject"] = (f"CAPF certificate monitor: {len(items)} certificate{'s' if len(items) != 1 else ''} "
                          f"expiring or expired (soonest: {_line(soonest.subject, 80)}, {_when(soonest)})")
    message["From"] = settings["sender"]
    message["To"] = ", ".join(settings["recipients"])
    message["Date"] = formatdate(now.timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid("opencapf-monitor")
    lines = [f"The CAPF certificate monitor on {host} checked the certificates at {format_utc(now)}.", "",
             f"{len(items)} certificate(s) reached a warning threshold ({', '.join(map(str, settings['warn_days']))} "
             f"days before expiry){f', {expired} of them expired' if expired else ''}:"]
    lines += [f"  {KIND_TITLES[kind]}s: {counts[kind]}" for kind in KINDS if counts[kind]]
    lines += ["", "Soonest expiries:"]
    for item in items[:SOONEST_SHOWN]:
        lines.append(f"  {item.not_after}  {_when(item):<22} {KIND_TITLES[item.kind]:<30} {_line(item.subject)}")
    if len(items) > SOONEST_SHOWN:
        lines.append(f"  ... and {len(items) - SOONEST_SHOWN} more: see the attached CSV.")
    lines += ["", "The attached expiring-certificates.csv lists every affected certificate and device.",
              "Renew LSCs with an install_upgrade operation (capf_phone or capf_bulk_update); regenerate or replace",
              "the CAPF certificate with capf_service; replace trust-store certificates with capf_trust_cert."]
    if counts["capf_certificate"]:
        lines += ["No LSC outlives the CAPF certificate that signs it: automatic renewal leaves the phones whose LSC",
                  "ends with the active CAPF certificate until a CAPF certificate that outlives them is active."]
    message.set_content("\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow(item.csv_row())
    message.add_attachment(buffer.getvalue().encode("utf-8"), maintype="text", subtype="csv",
                           filename="expiring-certificates.csv")
    return message


# -- sending ------------------------------------------------------------------------------------


def _tls_context(settings: dict) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=settings["smtp_ca_file"] or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError("monitor_smtp_ca_file", f"cannot be read as PEM CA certificates ({exc})",
                              settings["smtp_ca_file"]) from None


class _Unanswered(Exception):
    """The connection to the relay was lost after the message itself went out, before the relay's answer
    to it: the relay may have taken it."""


class _Watched:
    """An SMTP client that notes when the message itself goes out (DATA)."""

    handed_over = False

    def data(self, msg):
        self.handed_over = True  # from here a lost connection leaves it unknown whether the relay took it
        return super().data(msg)  # pylint: disable=no-member


class _Smtp(_Watched, smtplib.SMTP):
    pass


class _SmtpTls(_Watched, smtplib.SMTP_SSL):
    pass


def _send_once(message: EmailMessage, settings: dict) -> None:
    """Send ``message`` through one SMTP session; ``_Unanswered`` when it may have been taken, unanswered. Once
    the relay took it, how the session ends (QUIT) changes nothing: it is sent."""
    host, port, security = settings["smtp_host"], settings["smtp_port"], settings["smtp_security"]
    if security == "tls":
        client = _SmtpTls(host, port, timeout=SMTP_TIMEOUT_SECONDS, context=_tls_context(settings))
    else:
        client = _Smtp(host, port, timeout=SMTP_TIMEOUT_SECONDS)
    try:
        client.ehlo()
        if security == "starttls":
            client.starttls(context=_tls_context(settings))
            client.ehlo()
        if settings["smtp_username"]:
            client.login(settings["smtp_username"], settings["smtp_password"] or "")
        try:
            client.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            if client.handed_over and not isinstance(exc, smtplib.SMTPResponseException):
                raise _Unanswered(_describe(exc)) from None
            raise
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    finally:
        client.close()


def _describe(exc: BaseException) -> str:
    """An SMTP failure in one line (the server's reply, never what was sent)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{type(exc).__name__}: {exc.smtp_code} {' '.join(text.split())}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "SMTPRecipientsRefused: " + ", ".join(sorted(exc.recipients))
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no detail'}"


def send(message: EmailMessage, settings: dict, *, attempts: int = SEND_ATTEMPTS,
         pause: float = FIRST_PAUSE_SECONDS, sleep: Callable[[float], None] = time.sleep) -> tuple[int, str, bool]:
    """Send ``message`` through the relay, trying ``attempts`` times with a doubling pause; return the
    attempts made, the last error ('' once sent) and whether the relay may have taken it although it did
    not say so (its answer to the message itself was lost: not tried again, so that it is not sent twice).
    Never raises for an SMTP or network failure."""
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            _send_once(message, settings)
            return attempt, "", False
        except ValidationError as exc:
            return attempt, str(exc), False
        except _Unanswered as exc:
            error = f"{exc}: the relay's answer to the message was lost; it may have taken it, so it is not sent again"
            log.warning("monitor: sending the warning mail through %s:%d (attempt %d of %d): %s",
                        settings["smtp_host"], settings["smtp_port"], attempt, attempts, error)
            return attempt, error, True
        except (smtplib.SMTPException, OSError, ssl.SSLError, UnicodeError) as exc:
            error = _describe(exc)
            log.warning("monitor: sending the warning mail through %s:%d failed (attempt %d of %d): %s",
                        settings["smtp_host"], settings["smtp_port"], attempt, attempts, error)
        if attempt < attempts:
            sleep(pause * 2 ** (attempt - 1))
    return attempts, error, False


# -- a check ------------------------------------------------------------------------------------


def check(store: Store, now=None, *, sleep: Callable[[float], None] = time.sleep,
          pause: float = FIRST_PAUSE_SECONDS) -> dict[str, Any]:
    """Check every monitored certificate at ``now`` (default: the real time), send one warning mail
    when something is due, and record the run (and the warnings sent). Never raises for SMTP.

    A mail is sent at most once: its warnings and the run (result ``unknown``) are recorded before it is
    sent, in one write transaction (under the monitor's lead when the caller runs it as a duty,
    ``Store.leading``); its outcome is recorded after. A check that cannot record first sends nothing
    (its failure is raised); one whose outcome cannot be recorded (a lost store connection) leaves the
    warnings recorded as sent, so that no process mails them again, and the run ``unknown``, logged and
    shown by ``status``. A relay that definitely did not take the mail frees its warnings again: a later
    check sends them."""
    moment = _moment(now)
    checked_at = format_utc(moment)
    with store.read() as tx:
        settings = _settings(tx, store.secret())
        items = findings(tx, moment, settings["warn_days"])
        due = _due_warnings(tx, items, settings["resend"])
        previous = records.last_run(tx)
    if due and configured(settings) and not settings["problem"]:
        return _mail(store, settings, moment, items, previous, sleep=sleep, pause=pause)
    attempts, error = 0, ""
    if not due:
        result = "nothing_due"
    elif not configured(settings):
        result = "not_configured"
        log.warning("monitor: %d certificate(s) reached a warning threshold (soonest: %s %s, %s); no mail is sent "
                    "(set monitor_recipients, monitor_smtp_host and monitor_sender)", len(due),
                    KIND_TITLES[due[0].kind], _line(due[0].subject), _when(due[0]))
    else:
        result, error = "failed", settings["problem"]
        log.warning("monitor: no mail is sent: %s", error)
    failures = (previous["failures"] + 1 if previous else 1) if result == "failed" else 0
    with store.transaction() as tx:
        records.forget_warnings(tx, format_utc(moment - _dt.timedelta(days=FORGET_AFTER_DAYS)))
        run_id = records.record_run(tx, checked_at=checked_at, finished_at=format_utc(utc_now()), result=result,
                                    found=len(items), warnings=len(due), mails_sent=0, attempts=attempts,
                                    failures=failures, error=error)
    return _outcome(run_id, checked_at, result, items, due, 0, attempts, error)


def _mail(store: Store, settings: dict, moment: _dt.datetime, items: list[Finding], previous: dict | None, *,
          sleep: Callable[[float], None], pause: float) -> dict[str, Any]:
    """Record the warnings due and the run as ``unknown``, send the mail, then record its outcome."""
    checked_at = format_utc(moment)
    with store.transaction() as tx:
        due = _due_warnings(tx, items, settings["resend"])  # as the store holds them now
        claimed = records.claim_warnings(tx, _warning_rows(due), checked_at) if due else []
        records.forget_warnings(tx, format_utc(moment - _dt.timedelta(days=FORGET_AFTER_DAYS)))
        run_id = records.record_run(tx, checked_at=checked_at, finished_at=format_utc(utc_now()),
                                    result="unknown" if due else "nothing_due", found=len(items), warnings=len(due),
                                    mails_sent=0, attempts=0, failures=0, error=UNKNOWN_OUTCOME if due else "")
    if not due:
        return _outcome(run_id, checked_at, "nothing_due", items, due, 0, 0, "")
    attempts, error, unsure = send(compose(due, settings, moment), settings, sleep=sleep, pause=pause)
    result = "unknown" if unsure else "failed" if error else "sent"
    if not error:
        log.info("monitor: warned %s about %d certificate(s) (soonest: %s %s, %s)", ", ".join(settings["recipients"]),
                 len(due), KIND_TITLES[due[0].kind], _line(due[0].subject), _when(due[0]))
    failures = (previous["failures"] + 1 if previous else 1) if result == "failed" else 0
    try:
        with store.transaction() as tx:
            if result == "failed":  # the relay did not take it: a later check sends these warnings
                records.unclaim_warnings(tx, claimed)
            elif result == "sent":
                records.record_warnings(tx, _warning_rows(due), checked_at)
            records.finish_run(tx, run_id, finished_at=format_utc(utc_now()), result=result,
                               mails_sent=int(result == "sent"), attempts=attempts, failures=failures, error=error)
    except StoreError as exc:
        log.warning("monitor: the warning mail about %d certificate(s) (soonest: %s %s, %s) was %s, but that could "
                    "not be recorded: %s; its warnings stay recorded as sent (recorded before sending), so that no "
                    "process mails them again%s, and the run's result stays unknown ('monitor show')", len(due),
                    KIND_TITLES[due[0].kind], _line(due[0].subject), _when(due[0]),
                    {"sent": "sent", "failed": "not sent", "unknown": "perhaps sent"}[result], exc,
                    ": warn the recipients yourself" if result == "failed" else "")
    return _outcome(run_id, checked_at, result, items, due, int(result == "sent"), attempts, error)


def _warning_rows(due: list[Finding]) -> list[tuple]:
    return [(item.fingerprint, threshold, item.kind, item.subject, item.not_after)
            for item in due for threshold in item.thresholds]


def _outcome(run_id: int, checked_at: str, result: str, items: list[Finding], due: list[Finding], mails: int,
             attempts: int, error: str) -> dict[str, Any]:
    return {"id": run_id, "checked_at": checked_at, "result": result, "found": len(items), "warnings": len(due),
            "mails_sent": mails, "attempts": attempts, "error": error,
            "certificates": [{"kind": item.kind, "subject": item.subject, "fingerprint": item.fingerprint,
                              "not_after": item.not_after, "days_left": item.days_left, "threshold": item.threshold}
                             for item in due]}


def next_due(tx: Transaction) -> _dt.datetime | None:
    """When the monitor should check next (None: at once; it never ran)."""
    last = records.last_run(tx)
    if last is None:
        return None
    interval = _dt.timedelta(hours=service_records.value(tx, "monitor_interval_hours"))
    wait = interval
    if last["result"] == "failed":
        wait = min(interval, _dt.timedelta(minutes=RETRY_AFTER_MINUTES * 2 ** min(last["failures"] - 1, 16)))
    return parse_utc(last["checked_at"], "checked_at") + wait


def run_if_due(store: Store, now=None, **options) -> dict[str, Any] | None:
    """Check when the interval since the last run has passed (or a failed run's retry is due); the
    run's result, or None when nothing was due."""
    moment = _moment(now)
    with store.read() as tx:
        due_at = next_due(tx)
    if due_at is not None and moment < due_at:
        return None
    return check(store, moment, **options)


def status(tx: Transaction) -> dict[str, Any]:
    """The monitor's last run and last successful run, and when it checks next (capf_info, ``monitor show``)."""
    last = records.last_run(tx)
    success = records.last_success(tx)
    due_at = next_due(tx)
    shown = ("checked_at", "finished_at", "result", "found", "warnings", "mails_sent", "attempts", "error")
    return {"last_run": None if last is None else {key: last[key] for key in shown},
            "last_success": None if success is None else success["checked_at"],
            "next_check": None if due_at is None else format_utc(due_at)}


__all__ = ["Finding", "LEAD", "check", "compose", "configured", "expiring", "expiring_in", "findings", "next_due", "run_if_due", "send",
           "status"]

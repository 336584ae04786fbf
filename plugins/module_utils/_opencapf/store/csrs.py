# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pending certificate work: one row per public key a phone sent, from arrival to issuance."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit, phones
from .backend import Transaction


def add(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes) -> int:
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, created_at, updated_at) "
        "VALUES (?, ?, ?, 'pending', ?, ?)", (phone_id, public_key_fingerprint, public_key, now, now))


def add_issued(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes,
               certificate_id: int) -> int:
    """Record a public key together with the LSC issued for it (status ``issued``); return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, certificate_id, created_at, updated_at) "
        "VALUES (?, ?, ?, 'issued', ?, ?, ?)", (phone_id, public_key_fingerprint, public_key, certificate_id, now, now))


def add_failed(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes, reason: str) -> int:
    """Record a public key no LSC could be issued for (status ``failed`` with ``reason``); return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, reason, created_at, updated_at) "
        "VALUES (?, ?, ?, 'failed', ?, ?, ?)", (phone_id, public_key_fingerprint, public_key, reason, now, now))


def add_signed(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes, csr_pem: str) -> int:
    """Record a phone-signed CSR (for a third-party CA) as ``pending``; return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, csr_pem, status, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (phone_id, public_key_fingerprint, public_key, csr_pem, now, now))


def set_status(tx: Transaction, csr_id: int, status: str, reason: str = "", certificate_id: int | None = None,
               external_ref: str | None = None) -> None:
    """Set a CSR's status and reason; a ``certificate_id`` or ``external_ref`` given replaces the stored one."""
    tx.execute("UPDATE csrs SET status = ?, reason = ?, certificate_id = COALESCE(?, certificate_id), "
               "external_ref = COALESCE(?, external_ref), updated_at = ? WHERE id = ?",
               (status, reason, certificate_id, external_ref, format_utc(utc_now()), csr_id))


def status_of(tx: Transaction, csr_id: int) -> str | None:
    """The CSR's status now (None: no such CSR)."""
    row = tx.one("SELECT status FROM csrs WHERE id = ?", (csr_id,))
    return None if row is None else row["status"]


def supersede(tx: Transaction, csr_id: int, reason: str) -> None:
    """Mark a CSR ``superseded`` with ``reason``."""
    tx.execute("UPDATE csrs SET status = 'superseded', reason = ?, updated_at = ? WHERE id = ?",
               (reason, format_utc(utc_now()), csr_id))


def supersede_for_certificate(tx: Transaction, certificate_id: int, reason: str) -> None:
    """Mark the CSRs the certificate ``certificate_id`` was issued for ``superseded`` with ``reason``."""
    tx.execute("UPDATE csrs SET status = 'superseded', reason = ?, updated_at = ? WHERE certificate_id = ?",
               (reason, format_utc(utc_now()), certificate_id))


def unfinished_signed(tx: Transaction, phone_id: int) -> list[int]:
    """The ids of the phone's phone-signed CSRs still ``pending`` or ``issued``."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE phone_id = ? AND status IN ('pending', 'issued') "
                                          "AND csr_pem IS NOT NULL", (phone_id,))]


def waiting_certificate(tx: Transaction, csr_id: int) -> int | None:
    """The id of the certificate issued for the CSR and not yet delivered (status ``issued``), or None."""
    row = tx.one("SELECT c.id FROM csrs r JOIN certificates c ON c.id = r.certificate_id "
                 "WHERE r.id = ? AND c.status = 'issued'", (csr_id,))
    return None if row is None else row["id"]


def latest_signed(tx: Transaction, phone_id: int) -> dict[str, Any] | None:
    """The phone's newest phone-signed CSR (id, status, external_ref, certificate_id, created_at) with its
    certificate's ``certificate_status`` and ``pem``, or None."""
    return tx.one("SELECT r.id, r.status, r.external_ref, r.certificate_id, r.created_at, c.status AS certificate_status, "
                  "c.pem FROM csrs r LEFT JOIN certificates c ON c.id = r.certificate_id "
                  "WHERE r.phone_id = ? AND r.csr_pem IS NOT NULL ORDER BY r.id DESC LIMIT 1", (phone_id,))


def pending_online(tx: Transaction, device_name: str | None = None, *, now: str | None = None,
                   clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """CSRs pending at an online CA (id, csr_pem, external_ref and the phone's ``name``), oldest first:
    all of them or those of the phone ``device_name``; those reported ``failed`` at ``now`` on a store
    whose clock skew is ``clock_skew`` (``reported_status``) no longer wait, whether or not the
    scheduler has failed them yet."""
    sql = ("SELECT r.id, r.csr_pem, r.external_ref, p.name FROM csrs r JOIN phones p ON p.id = r.phone_id "
           f"WHERE r.status = 'pending' AND r.external_ref IS NOT NULL AND {reported_status('r', 'p')} = 'pending'")
    params: tuple = reported_parameters(now, clock_skew)
    if device_name:
        sql += " AND p.name = ?"
        params += (device_name,)
    return tx.query(sql + " ORDER BY r.id", params)


def offline_signed(tx: Transaction, status: str, *, now: str | None = None,
                   clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """Phone-signed CSRs in ``status`` as reported at ``now`` on a store whose clock skew is
    ``clock_skew`` (``reported_status``) with no online CA's reference (id, csr_pem, created_at and the
    phone's ``name``), oldest first."""
    stored, stored_params = _stored_as("r", (status,))
    return tx.query("SELECT r.id, r.csr_pem, r.created_at, p.name FROM csrs r JOIN phones p ON p.id = r.phone_id "
                    f"WHERE {stored} AND {reported_status('r', 'p')} = ? AND r.csr_pem IS NOT NULL "
                    "AND r.external_ref IS NULL ORDER BY r.id", (*stored_params, *reported_parameters(now, clock_skew), status))


def fail_pending(tx: Transaction, actor: str, device_name: str, csr_id: int, reason: str, *, was: str = "pending",
                 **details: Any) -> bool:
    """Mark the CSR of the phone ``device_name`` ``failed`` with ``reason`` if it is still ``was``
    (``pending``: at a CA), with its ``csr.failed`` audit event (its ``csr_id``, ``reason`` and
    ``details``): the one way a key request fails and the one shape of its event, whoever fails it (a
    session's end, the scheduler settling an abandoned session or a lapse, the operator's change, a CA's
    refusal). Whether it was."""
    failed = tx.execute("UPDATE csrs SET status = 'failed', reason = ?, updated_at = ? WHERE id = ? AND status = ?",
                        (reason, format_utc(utc_now()), csr_id, was)) > 0
    if failed:
        audit.record(tx, actor, "csr.failed", device_name, csr_id=csr_id, reason=reason, **details)
    return failed


def pending_of_phones(tx: Transaction, phone_ids) -> list[dict[str, Any]]:
    """The ``pending`` CSRs (id, phone_id, public_key) of the phones ``phone_ids``, oldest first: one
    query (for more than 500 phones, a bulk job's, every pending CSR, read through the index
    ``csrs_status``, and those of the phones kept)."""
    ids = set(phone_ids)
    sql = "SELECT id, phone_id, public_key FROM csrs WHERE status = 'pending'"
    if len(ids) > 500:
        return [row for row in tx.query(sql + " ORDER BY id") if row["phone_id"] in ids]
    ordered = sorted(ids)
    return tx.query(sql + " AND phone_id IN (%s) ORDER BY id" % ", ".join("?" * len(ordered)), ordered) if ids else []


# Why a lapse (the scheduler's, or a session's at the phone's contact) fails the phone's CSRs still at a CA.
LAPSED = "the operation's deadline (operation_completes_by) passed while the CA held the request"


# A ``pending`` key request that the scheduler fails with its phone's operation is reported ``failed``
# by every view (and left alone by the enrolment service and the offline import) from the moment the
# scheduler would fail it, whether or not it has run since (``reported_status``):
# * the session that made it (it was created at or after the phone's ``last_session_at``: the start of
#   the sessions that may be live at once, ``phones.record_session_start``) left the
#   operation abandoned (``phones.left_abandoned``): ``decider.settle_abandoned`` fails it with the
#   operation and its reason (``phones.abandoned_reason``), also a request an online CA holds (the
#   session ended aborted: the phone keeps no key for it, as when a live session ends so);
# * else the phone's operation lapses as read (``phones.lapses``): ``scheduler.lapse_deadlines`` fails
#   every request of the phone still at a CA, with ``LAPSED``.
def _left_by_abandoned_session(r: str, p: str) -> str:
    return (f"{r}.status = 'pending' AND {p}.last_session_at IS NOT NULL AND {r}.created_at >= {p}.last_session_at "
            f"AND {phones.left_abandoned(p)}")


def _lapsed_with_phone(r: str, p: str) -> str:
    return f"{r}.status = 'pending' AND {phones.lapses(p)}"


_LAPSED_SQL = LAPSED.replace("'", "''")


def reported_status(r: str, p: str) -> str:
    """The status of the CSR row ``r`` (of the phone row ``p``) as views report it at a moment: what the
    scheduler's duties would record if they ran then. Its parameters are ``reported_parameters``."""
    return (f"CASE WHEN ({_left_by_abandoned_session(r, p)}) OR ({_lapsed_with_phone(r, p)}) THEN 'failed' "
            f"ELSE {r}.status END")


def reported_reason(r: str, p: str) -> str:
    """The reason that goes with ``reported_status`` (the same parameters)."""
    return (f"CASE WHEN {_left_by_abandoned_session(r, p)} THEN {phones.abandoned_reason_sql(p)} "
            f"WHEN {_lapsed_with_phone(r, p)} THEN '{_LAPSED_SQL}' ELSE {r}.reason END")


def reported_parameters(now: str | None = None, clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> tuple[str, ...]:
    """The parameters of ``reported_status`` (and of its reason) read at ``now`` (default: this second)
    on a store whose clock skew is ``clock_skew`` (``Store.clock_skew``)."""
    now = now or format_utc(utc_now())
    return (*phones.abandonment_moments(now, clock_skew), *phones.reported_parameters(now, clock_skew)[:3])


def _stored_as(r: str, statuses) -> tuple[str, tuple]:
    """A condition on the stored status of the CSR row ``r`` that every CSR reported in ``statuses`` meets
    (reporting only ever turns ``pending`` into ``failed``), with its parameters: the ``csrs_status``
    index serves it, so a view of a few statuses does not read every key request of the years."""
    stored = tuple(sorted(set(statuses) | ({"pending"} if "failed" in statuses else set())))
    return f"{r}.status IN ({', '.join('?' * len(stored))})", stored


def reported_status_of(tx: Transaction, csr_id: int, *, now: str | None = None,
                       clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> str | None:
    """The CSR's status as views report it at ``now`` (``reported_status``; None: no such CSR): what an
    answer of a CA for it is recorded against."""
    row = tx.one(f"SELECT {reported_status('r', 'p')} AS status FROM csrs r JOIN phones p ON p.id = r.phone_id "
                 "WHERE r.id = ?", (*reported_parameters(now, clock_skew), csr_id))
    return None if row is None else row["status"]


def left_by_session(tx: Transaction, phone: dict[str, Any]) -> list[int]:
    """The ids of the ``pending`` CSRs the phone's last session made (``pending_since`` its start): those
    an abandoned operation's settlement fails with it."""
    return pending_since(tx, phone["id"], phone["last_session_at"]) if phone["last_session_at"] else []


# A session of the phone that begins while another one may still be live (``phones.may_be_live``: the
# phone reconnected) finds the requests that one sent since its start (``last_session_at``): that session
# has not ended, so it told the phone nothing to come back for (the end of a session is durable before its
# END_SESSION or RETRY_LATER goes out), and the phone keeps no key for them. The new session's start
# supersedes them, as the phone's new request would: never delivered, never failed while their session may
# still run, and none waits for good should that session's process have died.
UNENDED = ("the phone began another session before the session that sent it had ended: the phone keeps no key "
           "for it")


def supersede_unended(tx: Transaction, actor: str, phone: dict[str, Any], **details: Any) -> list[int]:
    """Supersede the ``pending`` requests of ``phone`` (a row read in ``tx`` before a session that joins
    another one's records its start) sent since the start of the sessions that may be live (``UNENDED``),
    each with a ``csr.superseded`` audit event. The ids."""
    return _supersede(tx, actor, phone, left_by_session(tx, phone), UNENDED, **details)


# A session of the phone that records its operation ``succeeded`` (the phone stored its LSC, deleted it,
# returned its certificates) ends the operation for every session of the phone, past and present: once a
# phone's operation is recorded ``succeeded``, none of its key requests is ``pending`` (stored, or as the
# views report it) until one of its sessions sends a new one, and no certificate for one of them is recorded
# as the phone's LSC or delivered. The success supersedes, in the same transaction, every request of the
# phone still ``pending``:
# * one another session sent since the start of the sessions that may be live: a session runs the operation
#   only while it waits for one (``decider.pending_operation``), and one that sends a request checks that
#   it still does, in the request's own transaction (``decider.StoreDecider._withdrawn``). Whether that
#   session ends deferred or its process dies, the operation is no longer in progress for the scheduler
#   to settle it with;
# * one an earlier session left at a CA as it ended deferred (the CA still holds it, or the offline CA's
#   operator has not signed it), when this session got its LSC elsewhere (the operator switched the issuer
#   to the CAPF, or the CA never answered): the phone holds the LSC of another key now, and no session runs
#   the operation again to deliver one.
# No view reports it waiting, the enrolment service and the offline export leave it alone, and a CA's later
# answer for it is recorded stale (``enrolment``). The phone's session end reads how many there are with
# the phone's row (``phones.get_for_session``, the index ``csrs_phone_status``): none, in almost every end.
COMPLETED = ("another session of the phone completed its operation: no session delivers a certificate for this "
             "request")


def supersede_at_success(tx: Transaction, actor: str, phone: dict[str, Any], **details: Any) -> list[int]:
    """Supersede every ``pending`` request of ``phone`` (a row read in ``tx`` by the session that records its
    operation ``succeeded``; with ``pending_requests``, ``phones.get_for_session``'s count of them, they are
    looked for only when there are any) with ``COMPLETED``, each with a ``csr.superseded`` audit event.
    The ids."""
    if not phone.get("pending_requests", 1):
        return []
    return _supersede(tx, actor, phone, pending_of(tx, phone["id"]), COMPLETED, **details)


def _supersede(tx: Transaction, actor: str, phone: dict[str, Any], superseded: list[int], reason: str,
               **details: Any) -> list[int]:
    for csr_id in superseded:
        supersede(tx, csr_id, reason)
        audit.record(tx, actor, "csr.superseded", phone["name"], csr_id=csr_id, reason=reason, **details)
    return superseded


def waiting_for_another_session(tx: Transaction, phone: dict[str, Any], own=()) -> bool:
    """Whether ``phone`` (a row read in ``tx``) has a ``pending`` request sent since the start of the
    sessions that may be live other than ``own`` (a session's own ids): one of another session that has
    not ended (a session that ended left none pending but its own, deferred, and a newer request supersedes
    an older one). Its session may be live, or dead: the operation stays in progress until that session
    ends or its bound has passed (``phones.left_abandoned``), so that its request is settled either way."""
    return any(csr_id not in own for csr_id in left_by_session(tx, phone))


def settle_abandoned_phone(tx: Transaction, actor: str, phone: dict[str, Any]) -> dict[str, Any]:
    """Settle the abandoned operation of ``phone`` (a row read in ``tx``; ``phones.left_abandoned``) as
    ``decider.settle_abandoned`` does: ``failed`` with ``phones.abandoned_reason``, together with the
    key requests its session left pending. Returns the row as recorded."""
    reason = phones.abandoned_reason(phone)
    phones.set_operation_result(tx, actor, phone, phones.ABANDONED_STATUS, reason,
                                live_until=phone["operation_live_until"])
    for csr_id in left_by_session(tx, phone):
        fail_pending(tx, actor, phone["name"], csr_id, reason)
    return dict(phone, operation_status=phones.ABANDONED_STATUS, operation_reason=reason)


def fail_as_read(tx: Transaction, actor: str, phone: dict[str, Any], now: str,
                 clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW, **details: Any) -> list[int]:
    """Fail the ``pending`` CSRs of ``phone`` (a row read in ``tx``) that views report ``failed`` at
    ``now`` on a store whose clock skew is ``clock_skew`` (``reported_status``), with the reason they
    report, each with a ``csr.failed`` audit event (``details`` added): what the scheduler's round would
    record of them then, before a change of the phone makes what the views reported untrue. The ids."""
    failed = []
    reasons = {}
    if phones.is_left_abandoned(phone, now, clock_skew):
        reasons.update((csr_id, phones.abandoned_reason(phone)) for csr_id in left_by_session(tx, phone))
    if phones.reported_operation(phone, now, clock_skew)[0] == "lapsed" and phone["operation_status"] != "lapsed":
        for row in pending_of_phones(tx, [phone["id"]]):
            reasons.setdefault(row["id"], LAPSED)
    for csr_id in sorted(reasons):
        if fail_pending(tx, actor, phone["name"], csr_id, reasons[csr_id], **details):
            failed.append(csr_id)
    return failed


def withdraw_pending(tx: Transaction, actor: str, owners: dict[int, str], reason: str, **details: Any) -> list[int]:
    """Fail the ``pending`` CSRs of the phones ``owners`` (id -> name) with ``reason``, each with a ``csr.failed``
    audit event (its ``csr_id``, ``reason`` and ``details``): the operation they were made for is
    withdrawn, so a CA's later answer is stale. The ids failed."""
    failed = []
    for row in pending_of_phones(tx, owners):
        if fail_pending(tx, actor, owners[row["phone_id"]], row["id"], reason, **details):
            failed.append(row["id"])
    return failed


def of_certificate(tx: Transaction, certificate_id: int) -> list[int]:
    """The ids of the CSRs the certificate ``certificate_id`` was issued for, oldest first."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE certificate_id = ? ORDER BY id", (certificate_id,))]


def for_certificate(tx: Transaction, certificate_id: int) -> dict[str, Any] | None:
    """The CSR a certificate was issued for (its newest, should there be several)."""
    return tx.one("SELECT * FROM csrs WHERE certificate_id = ? ORDER BY id DESC LIMIT 1", (certificate_id,))


def pending_of(tx: Transaction, phone_id: int) -> list[int]:
    """Ids of every ``pending`` CSR of the phone, oldest first (read through the index ``csrs_phone_status``)."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE phone_id = ? AND status = 'pending' ORDER BY id",
                                          (phone_id,))]


def pending_since(tx: Transaction, phone_id: int, since: str) -> list[int]:
    """Ids of the phone's ``pending`` CSRs created at or after ``since`` (a session's own requests)."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE phone_id = ? AND status = 'pending' "
                                          "AND created_at >= ? ORDER BY id", (phone_id, since))]


def listing(tx: Transaction, status: str | None = "pending", *, now: str | None = None,
            clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """CSR rows with their device names, oldest first (``status=None``: every row); their statuses and
    reasons as reported at ``now`` (default: this second) on a store whose clock skew is ``clock_skew``
    (``reported_status``), and so is ``status``."""
    parameters = reported_parameters(now, clock_skew)
    sql = (f"SELECT r.id, p.name AS device_name, r.public_key_fingerprint, {reported_status('r', 'p')} AS status, "
           f"{reported_reason('r', 'p')} AS reason, r.certificate_id, r.created_at, r.updated_at "
           "FROM csrs r JOIN phones p ON p.id = r.phone_id")
    params: tuple = (*parameters, *parameters)
    if status:
        stored, stored_params = _stored_as("r", (status,))
        sql += f" WHERE {stored} AND {reported_status('r', 'p')} = ?"
        params += (*stored_params, *parameters, status)
    return tx.query(sql + " ORDER BY r.created_at, r.id", params)


# CSRs waiting for a signature: not yet sent to a CA, or sent and not yet answered.
AWAITING_SIGNATURE = ("pending", "submitted")
_AWAITING_STORED, _AWAITING_STORED_PARAMS = _stored_as("r", AWAITING_SIGNATURE)
_AWAITING = f"{_AWAITING_STORED} AND {reported_status('r', 'p')} IN (%s)" % ", ".join("?" * len(AWAITING_SIGNATURE))


def awaiting_signature_statement(now: str | None = None,
                                 clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> tuple[str, tuple]:
    """The statement ``awaiting_signature`` runs, with its parameters."""
    return ("SELECT p.name AS device_name, r.id, r.status, r.public_key_fingerprint, r.external_ref, r.created_at, "
            f"r.updated_at FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE {_AWAITING} "
            "ORDER BY r.created_at, r.id",
            (*_AWAITING_STORED_PARAMS, *reported_parameters(now, clock_skew), *AWAITING_SIGNATURE))


def awaiting_signature(tx: Transaction, *, now: str | None = None,
                       clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """CSRs waiting for a signature (``AWAITING_SIGNATURE``) with their device names, oldest first: as
    reported at ``now`` on a store whose clock skew is ``clock_skew`` (``reported_status``: one the
    scheduler would fail then waits no more)."""
    return tx.query(*awaiting_signature_statement(now, clock_skew))


def awaiting_signature_for(tx: Transaction, device_name: str, *, now: str | None = None,
                           clock_skew: _dt.timedelta = phones.NO_CLOCK_SKEW) -> list[dict[str, Any]]:
    """The CSRs of one phone waiting for a signature (``AWAITING_SIGNATURE``), oldest first (as
    ``awaiting_signature``)."""
    return tx.query("SELECT r.id, r.status, r.public_key_fingerprint, r.external_ref, r.created_at, r.updated_at "
                    f"FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ? AND {_AWAITING} "
                    "ORDER BY r.created_at, r.id",
                    (device_name, *_AWAITING_STORED_PARAMS, *reported_parameters(now, clock_skew), *AWAITING_SIGNATURE))

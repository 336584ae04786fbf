# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phone certificates (LSCs and the copies troubleshoot sessions read back) with their status history."""

from __future__ import annotations

from typing import Any

from ..errors import CertificateError
from ..vocabulary import (REVOCATION_REASONS, REVOKED_DELETED, REVOKED_EXPIRED, REVOKED_SUPERSEDED, RETRIEVED_KINDS,
                          RETRIEVED_STATUS, format_utc, utc_now)
from . import audit, service
from .backend import Transaction


# A phone's current LSC is its certificate of kind 'lsc' of highest ``recency``:
# each LSC takes the phone's highest recency plus one when it is issued and again when the phone
# acknowledges installing it. The phone then holds the LSC it acknowledged last, even when two
# overlapping sessions of one device have their LSCs installed in the other order. A stale LSC (never
# installed, not on the phone) has recency 0, which no current LSC has, and keeps it when an operator
# revokes it afterwards; only the phone's acknowledgement of it gives it a recency again.
# ``CURRENT_LSC`` is that condition on an LSC row ``l`` of phone ``p``: of the phone's LSCs that are
# not stale, the one no more recent LSC follows.
CURRENT_LSC = ("l.kind = 'lsc' AND l.status != 'stale' AND l.recency > 0 AND NOT EXISTS (SELECT 1 FROM "
               "certificates x WHERE x.phone_id = p.id AND x.kind = 'lsc' AND x.recency > l.recency)")
_NEXT_RECENCY = "(SELECT COALESCE(MAX(r.recency), 0) + 1 FROM certificates r WHERE r.phone_id = {phone} AND r.kind = 'lsc')"
_COLUMNS = ("INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, "
            "source, pem, not_before, not_after, issued_at, installed_at, status_changed_at, chain_pem, recency) ")
_VALUES = ("?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? = 'stale' THEN 0 ELSE "
           + _NEXT_RECENCY.format(phone="?") + " END")
_INSERT = _COLUMNS + "VALUES (" + _VALUES + ")"


def insert(tx: Transaction, *, phone_id: int, kind: str, serial: str, issuer: str, fingerprint: str,
           public_key_fingerprint: str, status: str, source: str, pem: str, not_before: str,
           not_after: str, chain_pem: str | None = None, issued_at: str | None = None) -> int:
    """``chain_pem``: a third-party LSC's CA certificates between it and CAPF-trust (PEM), as the CA sent them;
    ``issued_at``: when it was issued (default: now, when the store records it)."""
    return tx.insert(_INSERT, _row(phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, source,
                                   pem, not_before, not_after, chain_pem, issued_at))


def insert_new_serial(tx: Transaction, *, phone_id: int, kind: str, serial: str, issuer: str, fingerprint: str,
                      public_key_fingerprint: str, status: str, source: str, pem: str, not_before: str,
                      not_after: str, signed_by: int | None = None, issued_at: str | None = None,
                      made_with: dict[str, Any] | None = None) -> int | None:
    """``insert`` a certificate whose serial was just drawn: None, and nothing written, when the unique
    index on (issuer, serial) already holds that serial (the caller draws another), when ``signed_by``,
    the id of the CAPF certificate that signed it, is not the active CAPF certificate (a rotation
    committed since the caller read it: the caller signs again with the active one), or when a service
    parameter of ``made_with`` (name -> the value the certificate was made with) is no longer in force
    (an operator's change committed since the caller read it: the caller makes it again with the value
    in force, ``service.value``)."""
    # The checks and the insert are one write transaction's, which no rotation's or change's commit can
    # come between (writers are serialised on both backends). One statement asks them all; asked apart
    # from the insert rather than as one INSERT ... SELECT: SQLite stages the rows of an INSERT ... SELECT
    # that reads its own table in a temporary table, which costs more than the second statement.
    if (signed_by is not None or made_with) and not _made_as_in_force(tx, signed_by, made_with or {}):
        return None
    return tx.insert_unless_conflict(_INSERT + " ON CONFLICT (issuer, serial) DO NOTHING",
                                     _row(phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status,
                                          source, pem, not_before, not_after, None, issued_at))


def _made_as_in_force(tx: Transaction, signed_by: int | None, made_with: dict[str, Any]) -> bool:
    """Whether the CAPF certificate ``signed_by`` (None: not asked) is the active one and the service
    parameters of ``made_with`` have the values it gives."""
    names = sorted(made_with)
    columns = [f"{service.STORED_VALUE} AS p{index}" for index in range(len(names))]
    params: list = list(names)
    if signed_by is not None:
        columns.append("(SELECT count(*) FROM capf_certificates WHERE id = ? AND active = 1) AS active")
        params.append(signed_by)
    row = tx.one("SELECT " + ", ".join(columns), params)
    if signed_by is not None and not row["active"]:
        return False
    return all(service.in_force(name, row[f"p{index}"]) == made_with[name] for index, name in enumerate(names))


def _row(*fields) -> tuple:
    """The values of ``_INSERT``: the certificate's fields, its times of issue (now unless given), installation
    and status, and its phone (whose LSCs its recency follows)."""
    *leading, status, source, pem, not_before, not_after, chain_pem, issued_at = fields
    now = format_utc(utc_now())
    return (*leading, status, source, pem, not_before, not_after, issued_at or now,
            now if status == "installed" else None, now, chain_pem, status, leading[0])


def serial_taken(tx: Transaction, issuer: str, serial: str) -> bool:
    return tx.one("SELECT 1 AS taken FROM certificates WHERE issuer = ? AND serial = ?", (issuer, serial)) is not None


def set_status(tx: Transaction, actor: str, certificate_id: int, status: str, subject: str = "", **details) -> None:
    """LSC ``certificate_id`` takes ``status``, with its audit event ``certificate.<status>`` (``details`` added;
    a stale LSC's event names it by its ``serial`` and ``issuer`` too)."""
    now = format_utc(utc_now())
    if status == "installed":
        extra, params = ", installed_at = ?, recency = " + _NEXT_RECENCY.format(phone="certificates.phone_id"), (now,)
    else:
        extra, params = (", recency = 0" if status == "stale" else ""), ()
    tx.execute(f"UPDATE certificates SET status = ?, status_changed_at = ?{extra} WHERE id = ?",
               (status, now, *params, certificate_id))
    if status == "stale":
        details = _named(tx, certificate_id, details)
    audit.record(tx, actor, f"certificate.{status}", subject, certificate_id=certificate_id, **details)


def _named(tx: Transaction, certificate_id: int, details: dict) -> dict:
    """``details`` of an event that names LSC ``certificate_id`` (``certificate.stale``, ``certificate.revoked``),
    with its ``serial`` and ``issuer``: as the caller gives them, else read here."""
    if details.get("serial") is None or details.get("issuer") is None:
        row = tx.one("SELECT serial, issuer FROM certificates WHERE id = ?", (certificate_id,))
        details = dict(details, serial=row["serial"], issuer=row["issuer"])
    return details


def for_phone(tx: Transaction, phone_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM certificates WHERE phone_id = ?"
    params: list = [phone_id]
    if kind:
        sql += " AND kind = ?"
        params.append(kind)
    return tx.query(sql + " ORDER BY id DESC", params)


def by_id(tx: Transaction, certificate_id: int) -> dict[str, Any] | None:
    return tx.one("SELECT * FROM certificates WHERE id = ?", (certificate_id,))


def by_fingerprint(tx: Transaction, fingerprint: str) -> list[dict[str, Any]]:
    return tx.query("SELECT * FROM certificates WHERE fingerprint = ? ORDER BY id DESC", (fingerprint,))


def id_for(tx: Transaction, phone_id: int, fingerprint: str, source: str) -> int | None:
    """The id of the phone's certificate ``fingerprint`` from ``source``, or None."""
    row = tx.one("SELECT id FROM certificates WHERE fingerprint = ? AND phone_id = ? AND source = ?",
                 (fingerprint, phone_id, source))
    return None if row is None else row["id"]


def device_names_by_fingerprint(tx: Transaction, source: str) -> dict[str, str]:
    """``{fingerprint: device name}`` of every certificate from ``source``."""
    return {row["fingerprint"]: row["name"] for row in tx.query(
        "SELECT c.fingerprint, p.name FROM certificates c JOIN phones p ON p.id = c.phone_id "
        "WHERE c.source = ?", (source,))}


def has_installed_lsc(tx: Transaction, phone_id: int, source: str) -> bool:
    """Whether the phone has an installed LSC from ``source``."""
    return tx.one("SELECT 1 AS found FROM certificates WHERE phone_id = ? AND kind = 'lsc' AND "
                  "source = ? AND status = 'installed'", (phone_id, source)) is not None


def install(tx: Transaction, actor: str, phone: dict[str, Any], certificate_id: int) -> dict[str, list[int]]:
    """The phone acknowledged storing LSC ``certificate_id``: in the caller's one transaction mark it
    installed, the previously installed LSC ``revoked`` (the phone overwrote it, so it must no
    longer authenticate), and every older LSC issued but never installed ``stale``. A revocation is
    final: an LSC revoked before the phone acknowledged it (an operator revoked it meanwhile) stays
    ``revoked``, and becomes the phone's current LSC as such."""
    rows = tx.query(
        "SELECT id, status, serial, issuer FROM certificates WHERE phone_id = ? AND kind = 'lsc' "
        "AND (id = ? OR status IN ('installed', 'issued'))",
        (phone["id"], certificate_id),
    )
    own = [row["status"] for row in rows if row["id"] == certificate_id]
    rows = [row for row in rows if row["id"] != certificate_id]
    overwritten = [row for row in rows if row["status"] == "installed"]
    revoked = [row["id"] for row in overwritten]
    stale = [row for row in rows if row["status"] == "issued" and row["id"] < certificate_id]
    if own == ["revoked"]:
        tx.execute("UPDATE certificates SET installed_at = ?, recency = "
                   + _NEXT_RECENCY.format(phone="certificates.phone_id") + " WHERE id = ?",
                   (format_utc(utc_now()), certificate_id))
        audit.record(tx, actor, "certificate.installed", phone["name"], certificate_id=certificate_id,
                     status="revoked")
    else:
        set_status(tx, actor, certificate_id, "installed", phone["name"])
    for old in overwritten:
        revoke(tx, actor, old["id"], phone["name"], REVOKED_SUPERSEDED, serial=old["serial"], issuer=old["issuer"])
    for old in stale:
        set_status(tx, actor, old["id"], "stale", phone["name"], reason="a newer key completed first",
                   serial=old["serial"], issuer=old["issuer"])
    return {"revoked": revoked, "stale": [row["id"] for row in stale]}


def set_stale_if_waiting(tx: Transaction, actor: str, phone: dict[str, Any], certificate_id: int,
                         reason: str = "the phone did not store it", **details: Any) -> bool:
    """LSC ``certificate_id`` will never be on the phone (the phone answered that it did not store it,
    or no longer holds its key; or it was refused at delivery): if it is still ``issued`` it becomes
    ``stale`` (never installed, and not on the phone), so that it is no longer taken for the phone's
    current LSC. One no longer waiting stays as it is: another session of the phone delivered it and
    the phone stored it, or an operator revoked it (a revocation is final). Returns whether it changed."""
    changed = tx.execute("UPDATE certificates SET status = 'stale', status_changed_at = ?, recency = 0 "
                         "WHERE id = ? AND status = 'issued'", (format_utc(utc_now()), certificate_id))
    if changed:
        audit.record(tx, actor, "certificate.stale", phone["name"], certificate_id=certificate_id, reason=reason,
                     **_named(tx, certificate_id, details))
    return bool(changed)


def revoke_installed(tx: Transaction, actor: str, phone: dict[str, Any], reason: str = REVOKED_DELETED,
                     statuses: tuple = ("installed",), **details: Any) -> list[int]:
    """Mark the phone's installed LSC(s) (those with one of ``statuses``) revoked, by default because a
    delete operation removed them (``details`` added to their events)."""
    rows = tx.query(
        "SELECT id, serial, issuer FROM certificates WHERE phone_id = ? AND kind = 'lsc' AND status IN (%s)"
        % ", ".join("?" * len(statuses)), (phone["id"], *statuses))
    for row in rows:
        revoke(tx, actor, row["id"], phone["name"], reason, serial=row["serial"], issuer=row["issuer"], **details)
    return [row["id"] for row in rows]


def keep_revoked_of_removed_phone(tx: Transaction, phone: dict[str, Any]) -> None:
    """Copy the revoked LSCs of ``phone``, about to be removed, to ``removed_phone_lscs`` (the CRL keeps them)."""
    tx.execute("INSERT INTO removed_phone_lscs (device_name, serial, issuer, source, pem, not_after, revoked_at, "
               "revocation_reason, delisted_after_crl) SELECT ?, serial, issuer, source, pem, not_after, revoked_at, "
               "revocation_reason, delisted_after_crl FROM certificates WHERE phone_id = ? AND kind = 'lsc' "
               "AND status = 'revoked'",
               (phone["name"], phone["id"]))


def revoke(tx: Transaction, actor: str, certificate_id: int, subject: str, reason: str, at: str | None = None,
           *, serial: str | None = None, issuer: str | None = None, **details) -> None:
    """Mark LSC ``certificate_id`` revoked with RFC 5280 ``reason`` (``REVOCATION_REASONS``) at ``at``
    (default now), with its audit event ``certificate.revoked``: one shape whoever revokes it (the
    operator, the phone's removal, a delete operation, a newer LSC the phone stored, the expiry duty),
    its ``certificate_id``, ``serial``, ``issuer``, ``reason`` and ``revoked_at`` (and ``details``). The
    engine's callers give the LSC's ``serial`` and ``issuer`` as they read it; else they are read here."""
    if reason not in REVOCATION_REASONS:
        raise CertificateError(f"revocation reason must be one of {', '.join(REVOCATION_REASONS)}, not {reason!r}")
    at = at or format_utc(utc_now())
    named = _named(tx, certificate_id, dict(details, serial=serial, issuer=issuer))
    tx.execute("UPDATE certificates SET status = 'revoked', status_changed_at = ?, revoked_at = ?, "
               "revocation_reason = ? WHERE id = ?", (at, at, reason, certificate_id))
    audit.record(tx, actor, "certificate.revoked", subject, certificate_id=certificate_id, reason=reason,
                 revoked_at=at, **named)


def expired(alias: str) -> str:
    """The condition that certificate row ``alias``, issued or installed, has expired at the moment
    that is its one parameter: its notAfter is before it (a certificate is valid through its notAfter
    second, RFC 5280 4.1.2.5). Revoked and stale certificates are what they are."""
    return f"{alias}.status IN ('installed', 'issued') AND {alias}.not_after < ?"


def reported_status(alias: str) -> str:
    """The status of certificate row ``alias`` as read at the moment that is the expression's one
    parameter: ``expired`` once ``expired`` holds, else as stored. Derived when read, never written,
    so every view and query tells the truth of its moment."""
    return f"CASE WHEN {expired(alias)} THEN 'expired' ELSE {alias}.status END"


def expired_unrevoked(tx: Transaction, now: str) -> list[dict[str, Any]]:
    """LSCs issued or installed whose notAfter has passed at ``now`` (``expired``), with their device names."""
    return tx.query(
        "SELECT c.id, c.serial, c.issuer, c.not_after, c.status, p.name AS device_name FROM certificates c "
        f"JOIN phones p ON p.id = c.phone_id WHERE c.kind = 'lsc' AND {expired('c')} ORDER BY c.id", (now,))


def revoked_lscs(tx: Transaction, issuer: str | None = None, with_pem: bool = False,
                 newest: int | None = None) -> list[dict[str, Any]]:
    """Revoked LSCs (of ``issuer``, else all), also those of phones removed since (negative ids), with
    their device names, serial, reason and time, oldest revocation first, or the ``newest`` so many,
    newest first; ``with_pem`` adds each certificate's PEM."""
    columns = ("serial", "issuer", "source", "not_after", "revoked_at", "revocation_reason") + (("pem",) if with_pem else ())
    in_store = (f"SELECT c.id AS id, p.name AS device_name, {', '.join(f'c.{column} AS {column}' for column in columns)} "
                "FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE c.kind = 'lsc' AND c.status = 'revoked'")
    removed = (f"SELECT -r.id AS id, r.device_name AS device_name, {', '.join(f'r.{column} AS {column}' for column in columns)} "
               "FROM removed_phone_lscs r")
    if newest is not None:
        return _newest_revoked(tx, in_store, removed, issuer, newest)
    sql = (in_store + (" AND c.issuer = ?" if issuer is not None else "")
           + " UNION ALL " + removed + (" WHERE r.issuer = ?" if issuer is not None else ""))
    params: list = [issuer, issuer] if issuer is not None else []
    return tx.query(sql + " ORDER BY revoked_at, id", params)


def _newest_revoked(tx: Transaction, in_store: str, removed: str, issuer: str | None, newest: int) -> list[dict[str, Any]]:
    """``revoked_lscs``' ``newest``, read newest first from indexes (those of the store's LSCs from the
    index of them all, or of ``issuer``'s, those of removed phones from that of each issuer's) and merged.
    Every renewal revokes an LSC, over the years: neither the reading nor the sorting grows with them."""
    # Each part is ordered as the whole is (revocation time, then id: -r.id for a removed phone's), so
    # the whole's newest are among the parts' newest, ties included. ``status_changed_at IS NOT NULL``
    # (every row) lets the first part read the index certificates_revoked_newest, which other queries cannot.
    first = " AND c.issuer = ?" if issuer is not None else " AND c.status_changed_at IS NOT NULL"
    parts = [f"SELECT * FROM ({in_store}{first} ORDER BY c.revoked_at DESC, c.id DESC LIMIT ?) c0"]
    params: list = ([issuer] if issuer is not None else []) + [newest]
    for index, each in enumerate([issuer] if issuer is not None else _removed_issuers(tx)):
        parts.append(f"SELECT * FROM ({removed} WHERE r.issuer = ? ORDER BY r.revoked_at DESC, r.id LIMIT ?) r{index}")
        params += [each, newest]
    return tx.query(" UNION ALL ".join(parts) + " ORDER BY revoked_at DESC, id DESC LIMIT ?", params + [newest])


def _removed_issuers(tx: Transaction) -> list[str]:
    """The issuers of removed phones' revoked LSCs: one step of their (issuer, revoked_at) index from each
    to the next, not a walk of the index."""
    found: list[str] = []
    while True:
        after = " WHERE issuer > ?" if found else ""
        row = tx.one(f"SELECT issuer FROM removed_phone_lscs{after} ORDER BY issuer LIMIT 1", found[-1:])
        if row is None:
            return found
        found.append(row["issuer"])


# A revoked LSC that CRLs still list: none has listed it beyond its validity yet (``delist``).
_LISTED = "status = 'revoked' AND delisted_after_crl IS NULL"


def crl_entries(tx: Transaction, issuer: str, now: str) -> list[dict[str, Any]]:
    """The revoked LSCs of ``issuer`` that a CRL issued at ``now`` lists: those not ``delist``-ed, and
    those delisted that are valid at ``now`` (a CRL issued by a host whose clock is behind that of the
    host that delisted them); also those of phones removed since (negative ids). With serial, PEM,
    notAfter, reason, time and ``delisted_after_crl``, oldest revocation first. Read from indexes of
    those alone: the LSCs delisted over the years are not read."""
    columns = "serial, pem, not_after, revoked_at, revocation_reason, delisted_after_crl"
    in_store = f"SELECT id, {columns} FROM certificates WHERE issuer = ? AND kind = 'lsc' AND status = 'revoked' AND "
    removed = f"SELECT -id AS id, {columns} FROM removed_phone_lscs WHERE issuer = ? AND "
    return tx.query(f"{in_store}delisted_after_crl IS NULL UNION ALL {in_store}delisted_after_crl IS NOT NULL "
                    f"AND not_after >= ? UNION ALL {removed}delisted_after_crl IS NULL UNION ALL {removed}"
                    "delisted_after_crl IS NOT NULL AND not_after >= ? ORDER BY revoked_at, id",
                    (issuer, issuer, now, issuer, issuer, now))


def listed_page(tx: Transaction, issuer: str, limit: int, after: tuple[str, int] | None = None,
                removed: bool = False) -> list[dict[str, Any]]:
    """The revoked LSCs of ``issuer`` that CRLs list (not ``delist``-ed), as ``crl_entries`` gives them, in
    the store (else, ``removed``, those of phones removed since), the first ``limit`` by revocation time
    and id after ``after`` (the revocation time and id, positive, of the last of the page before). Read
    from the indexes of those alone, a page at a time: a store that CRLs never left an LSC out of lists
    every LSC revoked over the years."""
    columns = "serial, pem, not_after, revoked_at, revocation_reason, delisted_after_crl"
    if removed:
        sql = f"SELECT -id AS id, {columns} FROM removed_phone_lscs WHERE issuer = ? AND delisted_after_crl IS NULL"
    else:
        sql = f"SELECT id, {columns} FROM certificates WHERE issuer = ? AND kind = 'lsc' AND {_LISTED}"
    params: list = [issuer]
    if after is not None:
        sql += " AND revoked_at >= ? AND (revoked_at > ? OR id > ?)"
        params += [after[0], after[0], after[1]]
    return tx.query(sql + " ORDER BY revoked_at, id LIMIT ?", params + [limit])


def delist(tx: Transaction, ids, number: int) -> None:
    """CRLs numbered above ``number`` leave out the revoked LSCs ``ids`` (``crl_entries``' ids: negative
    for a removed phone's) once they have expired: a CRL listed each of them beyond its validity (RFC 5280 3.3).
    One delisted already keeps the number of the CRL after which it was."""
    ids = sorted(ids)
    tx.executemany("UPDATE certificates SET delisted_after_crl = ? WHERE id = ? AND delisted_after_crl IS NULL",
                   [(number, each) for each in ids if each > 0])
    tx.executemany("UPDATE removed_phone_lscs SET delisted_after_crl = ? WHERE id = ? AND delisted_after_crl IS NULL",
                   [(number, -each) for each in ids if each < 0])


def revocation_mark(tx: Transaction, issuer: str) -> str:
    """A text that changes whenever an LSC of ``issuer`` is revoked: how many revoked LSCs CRLs list (not
    ``delist``-ed) and the newest revocation among them. Read from the index of those alone. (A
    delisting changes it too: ``revocation.refresh_crls`` gives every CRL up to date the mark after it.)"""
    row = tx.one(f"SELECT COUNT(*) AS n, MAX(revoked_at) AS last FROM certificates "
                 f"WHERE issuer = ? AND kind = 'lsc' AND {_LISTED}", (issuer,))
    removed = tx.one("SELECT COUNT(*) AS n, MAX(revoked_at) AS last FROM removed_phone_lscs "
                     "WHERE issuer = ? AND delisted_after_crl IS NULL", (issuer,))
    return f"{row['n'] + removed['n']}:{max(row['last'] or '', removed['last'] or '')}"


def record_retrieved(tx: Transaction, actor: str, phone: dict[str, Any], *, kind: str, serial: str, issuer: str,
                     fingerprint: str, public_key_fingerprint: str, pem: str, not_before: str,
                     not_after: str) -> int:
    """Keep a certificate read back from a phone (troubleshoot) for viewing; once per phone and fingerprint.

    ``kind`` (``lsc`` or ``mic``, decided by its chain) is kept as ``retrieved_lsc``/``retrieved_mic``
    with status ``retrieved`` and no ``installed_at``: a copy is never the phone's current LSC, and
    a delete or a newer LSC never has to revoke it."""
    existing = tx.one(
        "SELECT id FROM certificates WHERE phone_id = ? AND fingerprint = ? AND source = 'troubleshoot'",
        (phone["id"], fingerprint))
    now = format_utc(utc_now())
    if existing:
        tx.execute("UPDATE certificates SET status_changed_at = ? WHERE id = ?", (now, existing["id"]))
        certificate_id = existing["id"]
    else:
        if serial_taken(tx, f"troubleshoot:{phone['name']}:{issuer}", serial):
            # A CA never reuses a serial number: two different certificates with one are a forgery or a fault.
            raise CertificateError(f"CERTIFICATE: the phone returned a certificate with issuer {issuer} and serial "
                                   f"{serial} that differs from the one already on record with that serial")
        certificate_id = insert(
            tx, phone_id=phone["id"], kind=RETRIEVED_KINDS[kind], serial=serial,
            issuer=f"troubleshoot:{phone['name']}:{issuer}", fingerprint=fingerprint,
            public_key_fingerprint=public_key_fingerprint, status=RETRIEVED_STATUS,
            source="troubleshoot", pem=pem, not_before=not_before, not_after=not_after)
    audit.record(tx, actor, "certificate.retrieved", phone["name"], kind=kind, fingerprint=fingerprint)
    return certificate_id


def stale(tx: Transaction) -> list[dict[str, Any]]:
    """Stale LSCs (signed, never installed: overtaken by a newer key, or not stored by the phone) with their phone names."""
    return tx.query(
        "SELECT c.id, p.name AS device_name, c.serial, c.fingerprint, c.issued_at, c.status_changed_at, c.not_after "
        "FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE c.status = 'stale' ORDER BY c.id")


def stale_lscs_statement(device_names=None) -> tuple[str, list]:
    """The statement ``stale_lscs`` runs, with its parameters."""
    sql = ("SELECT p.name AS device_name, c.id, c.serial, c.issuer, c.fingerprint, c.not_after, c.issued_at, "
           "c.status_changed_at FROM certificates c JOIN phones p ON p.id = c.phone_id "
           "WHERE c.kind = 'lsc' AND c.status = 'stale'")
    params: list = []
    if device_names:
        sql += " AND p.name IN (%s)" % ", ".join("?" * len(device_names))
        params.extend(device_names)
    return sql + " ORDER BY p.name, c.id", params


def stale_lscs(tx: Transaction, device_names=None) -> list[dict[str, Any]]:
    """Stale LSCs with their device names, by device name: all, or those of ``device_names`` (upper case)."""
    return tx.query(*stale_lscs_statement(device_names))


def delete_if_stale(tx: Transaction, certificate_ids) -> None:
    """Delete those of the certificates ``certificate_ids`` that are stale."""
    tx.executemany("DELETE FROM certificates WHERE id = ? AND status = 'stale'", [(each,) for each in certificate_ids])


def delete_stale(tx: Transaction, actor: str) -> int:
    """Delete every stale LSC record; returns how many."""
    rows = stale(tx)
    if rows:
        tx.execute("DELETE FROM certificates WHERE status = 'stale'")
        audit.record(tx, actor, "certificate.stale_deleted", "certificates", count=len(rows),
                     serials=[row["serial"] for row in rows])
    return len(rows)


def lsc_counts(tx: Transaction, now: str) -> dict[str, int]:
    """How many LSC records there are by their status at ``now`` (``installed``, ``issued``, ``revoked``,
    ``stale``, and ``expired`` for those issued or installed whose notAfter has passed: ``reported_status``)."""
    return {row["status"]: int(row["n"]) for row in tx.query(
        f"SELECT {reported_status('c')} AS status, COUNT(*) AS n FROM certificates c WHERE c.kind = 'lsc' "
        "GROUP BY 1", (now,))}


def installed_lscs_expiring_count(tx: Transaction, now: str, until: str) -> int:
    """Installed LSCs not expired at ``now`` (valid through their notAfter second) that expire at ``until``
    or before: at most that long is left of them, as a threshold of the certificate monitor counts."""
    return int(tx.scalar("SELECT COUNT(*) FROM certificates WHERE status = 'installed' AND kind = 'lsc' "
                         "AND not_after >= ? AND not_after <= ?", (now, until)) or 0)


def watched_lscs_expiring(tx: Transaction, before: str, expired_since: str) -> list[dict[str, Any]]:
    """The LSCs the certificate monitor watches that expire before ``before``, soonest first, with the
    phone's name, description, model and device pool: every phone's installed LSC (expired ones too),
    and the phone's current LSC when it was revoked because it expired (``revocation.revoke_expired``:
    cessation of operation, at or after its notAfter) after ``expired_since``, so that the scheduler's
    revocation does not take the warning of its expiry away."""
    return tx.query(
        "SELECT l.fingerprint, l.serial, l.not_after, l.issuer, p.name AS device_name, p.description, p.model, "
        "p.device_pool FROM certificates l JOIN phones p ON p.id = l.phone_id "
        "WHERE l.kind = 'lsc' AND l.not_after < ? AND (l.status = 'installed' OR (l.status = 'revoked' "
        "AND l.revocation_reason = ? AND l.installed_at IS NOT NULL AND l.revoked_at >= l.not_after "
        f"AND l.not_after > ? AND {CURRENT_LSC})) ORDER BY l.not_after, p.name",
        (before, REVOKED_EXPIRED, expired_since))

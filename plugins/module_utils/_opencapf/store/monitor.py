# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The certificate monitor's records: the expiry warnings it has sent and its runs."""

from __future__ import annotations

from typing import Any, Iterable

from .backend import Transaction

RUNS_KEPT = 200  # the newest runs kept; older ones are removed by the next run


def warned(tx: Transaction, fingerprints: Iterable[str]) -> set[tuple[str, int]]:
    """The ``(fingerprint, threshold)`` pairs among ``fingerprints`` that a warning was sent for."""
    wanted = sorted(set(fingerprints))
    found: set[tuple[str, int]] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        rows = tx.query("SELECT fingerprint, threshold FROM monitor_warnings WHERE fingerprint IN (%s)"
                        % ", ".join("?" * len(chunk)), chunk)
        found.update((row["fingerprint"], int(row["threshold"])) for row in rows)
    return found


def record_warnings(tx: Transaction, rows: Iterable[tuple[str, int, str, str, str]], sent_at: str) -> None:
    """Record warnings as sent at ``sent_at``; each row is (fingerprint, threshold, kind, subject, not_after)."""
    tx.executemany(
        "INSERT INTO monitor_warnings (fingerprint, threshold, kind, subject, not_after, sent_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint, threshold) DO UPDATE SET sent_at = excluded.sent_at",
        [(*row, sent_at) for row in rows])


def claim_warnings(tx: Transaction, rows: Iterable[tuple[str, int, str, str, str]], sent_at: str) -> list[tuple[str, int]]:
    """Record warnings as sent at ``sent_at`` before their mail is sent (rows as ``record_warnings``),
    keeping those recorded already as they are; the ``(fingerprint, threshold)`` pairs it added."""
    added = []
    for row in rows:
        if tx.execute("INSERT INTO monitor_warnings (fingerprint, threshold, kind, subject, not_after, sent_at) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint, threshold) DO NOTHING", (*row, sent_at)):
            added.append((row[0], row[1]))
    return added


def unclaim_warnings(tx: Transaction, keys: Iterable[tuple[str, int]]) -> None:
    """Remove the warnings ``claim_warnings`` added for a mail that was not sent."""
    tx.executemany("DELETE FROM monitor_warnings WHERE fingerprint = ? AND threshold = ?", list(keys))


def sent_warnings(tx: Transaction) -> list[dict[str, Any]]:
    """Every recorded warning, newest first."""
    return tx.query("SELECT fingerprint, threshold, kind, subject, not_after, sent_at FROM monitor_warnings "
                    "ORDER BY sent_at DESC, fingerprint, threshold DESC")


def forget_warnings(tx: Transaction, expired_before: str) -> int:
    """Remove the warnings of certificates that expired before ``expired_before``; how many."""
    return tx.execute("DELETE FROM monitor_warnings WHERE not_after < ?", (expired_before,))


def record_run(tx: Transaction, *, checked_at: str, finished_at: str, result: str, found: int, warnings: int,
               mails_sent: int, attempts: int, failures: int, error: str) -> int:
    """Record one run of the monitor (and drop runs older than the newest ``RUNS_KEPT``); its id."""
    run_id = tx.insert(
        "INSERT INTO monitor_runs (checked_at, finished_at, result, found, warnings, mails_sent, attempts, failures, "
        "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (checked_at, finished_at, result, found, warnings, mails_sent, attempts, failures, error))
    tx.execute("DELETE FROM monitor_runs WHERE id <= ?", (run_id - RUNS_KEPT,))
    return run_id


def finish_run(tx: Transaction, run_id: int, *, finished_at: str, result: str, mails_sent: int, attempts: int,
               failures: int, error: str) -> None:
    """Record the outcome of run ``run_id``, recorded before its mail was sent."""
    tx.execute("UPDATE monitor_runs SET finished_at = ?, result = ?, mails_sent = ?, attempts = ?, failures = ?, "
               "error = ? WHERE id = ?", (finished_at, result, mails_sent, attempts, failures, error, run_id))


def last_run(tx: Transaction) -> dict[str, Any] | None:
    """The newest run, or None."""
    return tx.one("SELECT id, checked_at, finished_at, result, found, warnings, mails_sent, attempts, failures, error "
                  "FROM monitor_runs ORDER BY id DESC LIMIT 1")


def last_success(tx: Transaction) -> dict[str, Any] | None:
    """The newest run that did not fail and whose outcome is known, or None."""
    return tx.one("SELECT id, checked_at, finished_at, result FROM monitor_runs WHERE result NOT IN ('failed', 'unknown') "
                  "ORDER BY id DESC LIMIT 1")

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Automatic renewal: install_upgrade for phones whose LSC is about to expire, bounded per day.

Off unless the ``renew_before_days`` service parameter is set. One run, in one write transaction,
finds the phones whose current LSC is installed (or was until it expired and was revoked for that,
``revoke_after_expiry``) and expires within ``renew_before_days`` of now, that have no operation
pending or in progress, are not in ``auth_string`` mode (nobody would type the string) and whose
LSC was not renewed before (``store.renewals.due``), soonest expiry first, and schedules
``install_upgrade`` for as many of them as ``renew_max_per_day`` still allows in the 24 hours
before now. With the internal CAPF issuer, an LSC is due only if its replacement would
end strictly later: a new LSC ends ``validity_days`` after its issuance but never after the active
CAPF certificate (``ca.lsc.validity_end``), so an LSC that ends with the CAPF certificate is held
back (``held_back`` in the result) until a CAPF certificate that outlives it is active, instead of
being replaced every run by one that ends at the same moment. The change goes through the one converge path of phone settings
(``phone_config.converge_many``, ``via: renewal``), so every phone gets the same ``phone.update``
audit event as in a bulk update, and the run one ``renewal.schedule`` event like a bulk job's
``bulk.apply``. A second run changes nothing: a scheduled phone's operation is pending, and each
LSC is renewed once. The CAPF service runs it on its scheduler's lead (``server.scheduling``);
``opencapf renew run`` runs it on demand, its ``--now`` no later than this host's clock
(``cli/options.clock_or_earlier``): a run records its renewals as scheduled at ``now``.

A run as at a time ``now`` earlier than renewals or LSCs already recorded (``--now`` in the past,
hosts of one store whose clocks differ) decides as the store stood at ``now``: only LSCs issued at or
before it are candidates (an LSC issued later did not exist then), and its renewals, recorded at
``now``, must leave at most ``renew_max_per_day`` in every 24 hours: those that hold ``now``
include renewals recorded up to 24 hours after it, and no renewal recorded later counts
(``_most_in_a_day``).
"""

from __future__ import annotations

import bisect
import datetime as _dt
from typing import Any

from .ca.lsc import CAPF_ISSUER, validity_end, validity_start
from .phone_config import PhoneRequest, converge_many
from .store import Store, audit, capf_certificates
from .store import renewals as renewal_records
from .store import service as service_records
from .vocabulary import format_utc, parse_utc, utc_now

ACTION = "renewal.schedule"
HELD_BACK_LISTED = 20  # names of held-back phones in a run's result; the count is always whole
SETTINGS = {"operation": "install_upgrade"}  # store columns, as phone_config.check_settings gives them
DAY = _dt.timedelta(days=1)


def run(store: Store, now=None) -> dict[str, Any]:
    """Schedule the renewals due at ``now`` (default: the current time; ISO text or a datetime)."""
    moment = parse_utc(now, "now") if now is not None else utc_now()
    at = format_utc(moment)
    with store.read() as tx:  # most runs find nothing to do: they take no write lock
        plan = _plan(tx, moment)
    rows: list = []
    if plan["enabled"] and plan["rows"]:
        secret = store.secret()
        with store.transaction() as tx:
            plan = _plan(tx, moment)  # again under the write lock: another process may have run meanwhile
            rows = plan["rows"]
            if rows:
                converge_many(tx, store.actor, secret, [(row, PhoneRequest(row["name"], SETTINGS,
                                                                           prefix=f"phone {row['name']}: "))
                                                        for row in rows], via="renewal", reissue=True,
                              now=moment)
                renewal_records.record_many(tx, at, [(row["id"], row["lsc_id"]) for row in rows])
                audit.record(tx, store.actor, ACTION, "renewal", scheduled=len(rows), at=at,
                             renew_before_days=plan["days"], renew_max_per_day=plan["per_day"],
                             expires_before=plan["expires_before"])
            # Phones still due once these are scheduled wait for room in the next 24 hours.
            if plan["enabled"]:
                plan["more_due"] = bool(renewal_records.due(tx, plan["expires_before"], 1, plan["ends_before"],
                                                            issued_by=at))
    if not plan["enabled"]:
        return {"enabled": False, "changed": False, "at": at, "scheduled": []}
    count, names = plan["held_back"]
    return {"enabled": True, "changed": bool(rows), "at": at, "expires_before": plan["expires_before"],
            "scheduled": [{"name": row["name"], "lsc_not_after": row["lsc_not_after"]} for row in rows],
            "left_today": plan["room"] - len(rows), "more_due": plan["more_due"],
            "held_back": {"count": count, "names": names, "capf_not_after": plan["capf_not_after"],
                          "reason": "waiting for a CAPF certificate that outlives their LSC" if count else ""}}


def _plan(tx, moment: _dt.datetime) -> dict[str, Any]:
    parameters = service_records.read(tx)
    days, per_day = int(parameters["renew_before_days"]), int(parameters["renew_max_per_day"])
    if days == 0:
        return {"enabled": False, "rows": []}
    at = format_utc(moment)
    room = max(0, per_day - _most_in_a_day(tx, moment))
    expires_before = format_utc(moment + _dt.timedelta(days=days))
    ends_before, capf_not_after = _replacement_end(tx, parameters, moment)
    rows = renewal_records.due(tx, expires_before, room, ends_before, issued_by=at)
    more = bool(renewal_records.due(tx, expires_before, 1, ends_before, issued_by=at)) if not rows else False
    return {"enabled": True, "days": days, "per_day": per_day, "room": room, "expires_before": expires_before,
            "rows": rows, "more_due": more, "ends_before": ends_before, "capf_not_after": capf_not_after,
            "held_back": renewal_records.held_back(tx, expires_before, ends_before, HELD_BACK_LISTED, issued_by=at)}


def _most_in_a_day(tx, moment: _dt.datetime) -> int:
    """The most renewals recorded within any 24 hours (both ends included) that hold ``moment``: a run
    at ``moment`` adds its renewals to each of them. With none recorded after ``moment`` (a run at the
    current time), those of the 24 hours before it."""
    since = format_utc(moment - DAY)
    latest = renewal_records.latest(tx)
    if latest is None or latest <= format_utc(moment):
        return renewal_records.count_since(tx, since)
    times = [parse_utc(text, "scheduled_at") for text in
             renewal_records.scheduled_between(tx, since, format_utc(moment + DAY))]
    # The fullest such 24 hours begins at a renewal recorded at or before ``moment``, or at ``moment``.
    starts = [time for time in times if time <= moment] + [moment]
    return max(bisect.bisect_right(times, start + DAY) - bisect.bisect_left(times, start) for start in starts)


def _replacement_end(tx, parameters: dict, moment: _dt.datetime) -> tuple[str | None, str | None]:
    """The notAfter an LSC issued at ``moment`` would get, and the active CAPF certificate's notAfter,
    when the internal CAPF issuer signs (``ca.lsc.validity_end``: ``validity_days`` after it starts,
    ``ca.lsc.validity_start``, never past the CAPF certificate); (None, None) for a third-party issuer,
    whose CA decides its certificates' ends, or a store without a CAPF certificate (nothing is issued
    there before one is made)."""
    if parameters["issuer"] != CAPF_ISSUER:
        return None, None
    active = capf_certificates.active(tx)
    if active is None:
        return None, None
    capf_end = parse_utc(active["not_after"], "not_after")
    if capf_end <= moment:
        # An expired CAPF certificate issues nothing (``ca.lsc.check_signer_valid``): no LSC has a
        # replacement that ends later, and "" is before every time.
        return "", active["not_after"]
    start = validity_start(moment, parse_utc(active["not_before"], "not_before"))
    end, _capped = validity_end(start, int(parameters["validity_days"]), capf_end)
    return format_utc(end), active["not_after"]


__all__ = ["ACTION", "run"]

# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit log's actions, the one source of truth of what each event says: for every action the
detail keys it always carries, those it may carry, and what it means. ``audit.record`` and
``audit.record_many`` check each event against it (``check``), so an action tells one shape whoever
records it, and ``docs/audit.md`` lists the same table (``markdown``; a test compares them)."""

from __future__ import annotations

import logging
import os

from dataclasses import dataclass

from ..vocabulary import OPERATION_STATUSES


class AuditShapeError(TypeError):
    """An event of an action the vocabulary does not know, or without a key the action always carries, or
    with a key the action never carries: a defect of the code that records it, never of the input."""


@dataclass(frozen=True, slots=True)
class Shape:
    """The detail keys of one action: ``required`` always, ``optional`` when they apply; ``meaning``: one line."""

    meaning: str
    required: frozenset
    optional: frozenset
    keys: frozenset  # required | optional


def _shape(meaning: str, required: str = "", optional: str = "") -> Shape:
    required_keys, optional_keys = frozenset(required.split()), frozenset(optional.split())
    return Shape(meaning, required_keys, optional_keys, required_keys | optional_keys)


# The settings a phone's change records by option name, and the state a change resets (phone_config).
PHONE_SETTINGS = ("description model device_pool security_mode certificate_operation authentication_mode key_order "
                  "rsa_key_size ec_key_size operation_completes_by auth_failures locked operation_status "
                  "operation_reason auth_change")
# What a session's end tells of it (``sessions.record``): the connection's, the outcome's, the protocol's.
SESSION_REQUIRED = "session_id peer operation outcome reason duration_ms"
SESSION_OPTIONAL = "version presented issuer delivered retry_after key retrieved"
# How a session may end (``protocol.session``; ``tls_failed`` and ``refused`` before it began).
SESSION_OUTCOMES = ("succeeded", "deferred", "no_operation", "failed", "auth_failed", "unknown_device", "refused",
                    "protocol_error", "timeout", "aborted", "tls_failed")
# What an operation's result may add to its ``operation`` and ``reason`` (``phones.operation_event``).
OPERATION_OPTIONAL = "session_id certificate_id revoked stale retrieved live_until"
# An LSC recorded as issued (or stale on arrival): the same keys whoever signed it.
LSC_RECORDED = "certificate_id serial issuer signer source not_after"

ACTIONS: dict[str, Shape] = {
    # -- phones
    "phone.create": _shape("a phone was added (`via`: the path that asked) with its settings that differ from the "
                           "defaults", "via", PHONE_SETTINGS),
    "phone.update": _shape("a phone's settings changed (`via`: the path that asked): those changed, and the state "
                           "the change reset", "via", PHONE_SETTINGS),
    "phone.delete": _shape("a phone was removed from the store (its LSCs revoked first, its requests at a CA "
                           "failed)", "", "via"),
    "phone.auth_failed": _shape("a session's authentication of the phone failed (counted toward the lock-out)",
                                "failures locked reason"),
    **{f"phone.operation_{status}": _shape(f"the phone's operation became {status} (the result of a session, its "
                                           "end, a settling, a lapse, a CA's answer)", "operation reason",
                                           OPERATION_OPTIONAL)
       for status in OPERATION_STATUSES if status != "none"},
    # -- key requests
    "csr.created": _shape("the phone sent a key request (`superseded`: its older requests this one replaced, each "
                          "also told by its csr.superseded event)", "csr_id superseded"),
    "csr.superseded": _shape("a key request will never be delivered: a newer request, another session or the phone "
                             "replaced it", "csr_id reason", "session_id"),
    "csr.failed": _shape("a key request failed (its session's end, a settling, a lapse, a withdrawal, a CA's refusal)",
                         "csr_id reason", "session_id via"),
    "csr.pending": _shape("the online CA holds a key request pending", "csr_id reference"),
    "csr.answer_ignored": _shape("the online CA answered a key request that no longer waits", "csr_id reason answer"),
    "csr.imported": _shape("certificates of the offline CA were imported (the phones matched, those stale)",
                           "matched stale problems"),
    # -- LSCs and retrieved certificates
    "certificate.issued": _shape("an LSC was issued, by the CAPF certificate or a third-party CA (`signer`: the "
                                 "common name of the certificate that signed it, `issuer`: as the store records it)",
                                 LSC_RECORDED, "validity_capped validity_days"),
    "certificate.installed": _shape("the phone stored an LSC (`status: revoked`: one revoked on its way)",
                                    "certificate_id", "status"),
    "certificate.stale": _shape("an LSC will never be on the phone: the phone did not store it or no longer holds "
                                "its key, a newer key or request replaced it, it was refused at delivery (`code`: the "
                                "refusal's), or it arrived from a CA after its request no longer waited (`signer`, "
                                "`source`, `not_after`: as `certificate.issued` tells them)",
                                "certificate_id serial issuer reason", "code signer source not_after"),
    "certificate.revoked": _shape("an LSC was revoked (the operator, a removal, a delete operation, a newer LSC, "
                                  "the expiry duty)", "certificate_id serial issuer reason revoked_at",
                                  "via expired_at"),
    "certificate.refused": _shape("a certificate from a third-party CA was refused (its checks failed)",
                                  "code reason source certificate_subject issuer serial fingerprint"),
    "certificate.retrieved": _shape("a session fetched a copy of a certificate the phone holds", "kind fingerprint"),
    "certificate.stale_deleted": _shape("stale LSC records were deleted", "count serials"),
    # -- the CAPF certificate, CRLs, trust
    **{f"capf_certificate.{source}": _shape(f"a CAPF certificate was {source} and made active", "fingerprint key_type")
       for source in ("generated", "regenerated", "uploaded")},
    "capf_certificate.key_sealed": _shape("a CAPF certificate's key file was sealed into the store", "fingerprint"),
    "crl.signed": _shape("a CRL was signed", "number signer_fingerprint entries this_update next_update",
                         "clock_behind_seconds previous_this_update"),
    "trust.add": _shape("a certificate was added to a trust store", "fingerprint common_name", "rule_warnings"),
    "trust.describe": _shape("a trusted certificate's description changed", "fingerprint before after"),
    "trust.remove": _shape("a certificate was removed from a trust store", "fingerprint common_name"),
    # -- the service
    "service.update": _shape("service parameters changed (each with its value before and after)", "changes"),
    "service.online_ca_password": _shape("the online CA's password was set or removed (never the password)", "change"),
    "service.monitor_smtp_password": _shape("the monitor's SMTP password was set or removed (never the password)",
                                            "change"),
    "renewal.schedule": _shape("the renewal duty scheduled phones' LSCs for renewal",
                               "scheduled at renew_before_days renew_max_per_day expires_before"),
    # -- templates, bulk changes, directories, jobs
    "template.define": _shape("a device template was created or replaced", "settings", "auth_change"),
    "template.remove": _shape("a device template was removed"),
    "template.apply": _shape("a device template was applied to phones",
                             "via existing generated created updated unchanged kept"),
    "bulk.apply": _shape("a bulk change of phones was applied",
                         "matched changed unchanged inserted apply_config generated query"),
    "directory.sync": _shape("a directory was synchronised into phones",
                             "first_sync entries mapped created changed absent removed skipped"),
    "directory.sync_superseded": _shape("a directory sync applied nothing: a later one applied first, or its "
                                        "configuration was replaced", "ticket applied_ticket entries reason",
                                        "bind_given"),
    "job.schedule": _shape("a job was scheduled", "kind run_at"),
    "job.secret": _shape("a scheduled job's authentication string was replaced (never the string)"),
    "job.cancel": _shape("a scheduled job was cancelled"),
    "job.succeeded": _shape("a scheduled job ran", "kind"),
    "job.failed": _shape("a scheduled job failed (`reason`: its error)", "kind reason"),
    # -- sessions
    **{f"session.{outcome}": _shape(f"a CAPF connection ended {outcome.replace('_', ' ')} (one per sessions row)",
                                    SESSION_REQUIRED, SESSION_OPTIONAL)
       for outcome in SESSION_OUTCOMES},
    # -- the store's upkeep
    "store.sessions_pruned": _shape("the scheduler removed the session records older than session_retention_days "
                                    "(`sessions`: rows, `events`: their session.* events; `more`: older ones remain "
                                    "for the next round)", "sessions events before session_retention_days more"),
    # -- the benchmarks' own stores
    "bench.fleet_generated": _shape("a benchmark wrote a generated fleet into its store", "phones seed certificates csrs"),
}


# Where the environment sets ``STRICT_ENV`` to 1 (the tests do, and the services they start inherit it), an
# event of another shape is refused (``AuditShapeError``): a defect of the code that records it. Elsewhere a
# running CA records it as it is and logs the defect: a key missed in this list must not stop a phone's
# enrolment or an operator's change.
STRICT_ENV = "OPENCAPF_AUDIT_STRICT"
STRICT = os.environ.get(STRICT_ENV) == "1"
_log = logging.getLogger(__name__)


def check(action: str, details: dict) -> None:
    """Unless ``details`` has the shape of ``action`` (two set comparisons): ``AuditShapeError`` when ``STRICT``,
    else an error logged."""
    try:
        _check(action, details)
    except AuditShapeError as exc:
        if STRICT:
            raise
        _log.error("%s; the event is recorded as it is", exc)


def _check(action: str, details: dict) -> None:
    shape = ACTIONS.get(action)
    if shape is None:
        raise AuditShapeError(f"audit action {action!r} is not in the audit vocabulary (store/audit_actions.py)")
    keys = details.keys()
    if keys >= shape.required and keys <= shape.keys:
        return
    missing, unknown = sorted(shape.required - keys), sorted(keys - shape.keys)
    parts = [part for part in (missing and f"missing key(s) {', '.join(missing)}",
                               unknown and f"unknown key(s) {', '.join(unknown)}") if part]
    raise AuditShapeError(f"audit action {action!r}: {'; '.join(parts)} (its shape: store/audit_actions.py)")


def markdown() -> str:
    """The vocabulary as the table of ``docs/audit.md``: one row per action, in the vocabulary's order."""
    rows = ["| action | always | when it applies | meaning |", "|---|---|---|---|"]
    for action, shape in ACTIONS.items():
        rows.append(f"| `{action}` | {_keys(shape.required)} | {_keys(shape.optional)} | {shape.meaning} |")
    return "\n".join(rows) + "\n"


def _keys(keys: frozenset) -> str:
    return ", ".join(f"`{key}`" for key in sorted(keys)) or "–"

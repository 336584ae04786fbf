# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phones' CAPF settings, converged: the one path every change of a phone's settings takes.

Public option names (``certificate_operation``, ``authentication_mode``,
``operation_completes_by`` ...) are mapped to store columns here, so errors name what the user
typed. ``plan_phone()`` holds every rule and is pure (no I/O besides the keyed hash) and fast enough
for 40,000 phones; ``converge_many()`` plans a batch and writes it with one audit shape
(``audit_event``). ``capf_phone`` (a batch of one), bulk jobs, CSV imports and the declarative
file all call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import authstrings, faults, revocation
from .ca import certificates as c
from .errors import ValidationError
from .phone_query import phone_status, status_view
from .results import converged, text_or_none
from .store import Store, audit
from .store import csrs as csr_records
from .store import phones as phone_records
from .store import service as service_records
from .vocabulary import (AUTH_MODES, AUTH_STRING_DIGITS, DEADLINE_RULE, KEY_ORDERS, NO_DEADLINE, OPERATIONS,
                         SECURITY_MODES, TEMPLATE_DEADLINE_RULE, TIME_RULE, check_choice, check_ec_key_size,
                         check_int_range, check_rsa_key_size, format_utc, key_allowed, normalise_device_name,
                         parse_utc, parse_utc_exact, utc_now)

# option name -> store column
OPTION_COLUMNS = {
    "description": "description",
    "model": "model",
    "device_pool": "device_pool",
    "security_mode": "security_mode",
    "certificate_operation": "operation",
    "authentication_mode": "auth_mode",
    "key_order": "key_order",
    "rsa_key_size": "rsa_key_size",
    "ec_key_size": "ec_key_size",
    "operation_completes_by": "operation_deadline",
}
COLUMN_OPTIONS = {column: option for option, column in OPTION_COLUMNS.items()}
SECURE_MODES = ("authenticated", "encrypted")
# Columns written for every changed phone (one UPDATE statement shape for executemany).
WRITE_COLUMNS = tuple(OPTION_COLUMNS.values()) + (
    "auth_salt", "auth_hash", "auth_failures", "locked", "operation_status", "operation_reason")
# The columns that say which keys the phone's sessions ask for (``vocabulary.key_allowed``).
KEY_COLUMNS = ("key_order", "rsa_key_size", "ec_key_size")
# Columns the audit log never shows (a changed hash shows as ``auth_change``).
AUDIT_HIDDEN = ("auth_salt", "auth_hash")
# What check mode returns for an authentication string the real run generates (and returns once).
TO_BE_GENERATED = "(to be generated)"
# The paths that change a phone's settings, as the audit log names them.
VIA = ("capf_phone", "bulk", "csv", "apply", "renewal", "template", "ldap", "issue")


def check_settings(settings: dict | None, prefix: str = "", *, deadline_clears: bool = True) -> dict[str, Any]:
    """Validate phone settings given by option name; return {column: canonical value} for those set
    (``operation_completes_by: none`` as a deadline of None, which clears the phone's; a template,
    ``deadline_clears=False``, refuses it)."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    unknown = sorted(set(settings) - set(OPTION_COLUMNS))
    if unknown:
        raise ValidationError(prefix.rstrip(".") or "settings", "accepts only %s" % ", ".join(OPTION_COLUMNS),
                              unknown)
    result: dict[str, Any] = {}
    for option, value in settings.items():
        field = prefix + option
        if option in ("description", "model", "device_pool"):
            checked = text_or_none(value, field, 200 if option == "description" else 64)
        elif option == "security_mode":
            checked = check_choice(field, value, SECURITY_MODES)
        elif option == "certificate_operation":
            checked = check_choice(field, value, OPERATIONS)
        elif option == "authentication_mode":
            checked = check_choice(field, value, AUTH_MODES)
        elif option == "key_order":
            checked = check_choice(field, value, KEY_ORDERS)
        elif option == "rsa_key_size":
            checked = check_rsa_key_size(value, field)
        elif option == "ec_key_size":
            checked = check_ec_key_size(value, field)
        else:
            checked = _check_deadline(value, field, deadline_clears)
        result[OPTION_COLUMNS[option]] = checked
    return result


def _check_deadline(value, field: str, clears: bool) -> str | None:
    """An operation's deadline as declared, canonical; ``none`` (``NO_DEADLINE``) clears it (None) where
    ``clears``. It is kept as declared: a fraction of a second is refused, never dropped. An empty
    deadline is no deadline to set, nor a word to clear one: every path refuses it alike (a bulk job or
    a template would otherwise drop it, capf_phone clear the phone's), as the declarative file's schema
    does; leaving the option out keeps the phone's deadline."""
    rule = DEADLINE_RULE if clears else TEMPLATE_DEADLINE_RULE
    if value == NO_DEADLINE and clears:
        return None
    try:
        moment = None if value == NO_DEADLINE else parse_utc_exact(value, field)
    except ValidationError as exc:
        if exc.rule != TIME_RULE:  # a time, but not to the second: that rule is the one broken
            raise
        moment = None
    if moment is None:
        raise ValidationError(field, rule, value)
    return format_utc(moment)


def settings_options(columns: dict) -> dict[str, Any]:
    """Validated columns (``check_settings``) by option name again, as a request that is kept and read
    back later says them (a bulk job's ``set``): a cleared deadline as ``none``, never as null, which
    would read as the option left out."""
    return {COLUMN_OPTIONS[column]: (NO_DEADLINE if column == "operation_deadline" and value is None else value)
            for column, value in sorted(columns.items())}


@dataclass(frozen=True)
class AuthRequest:
    """How to treat the authentication string: a literal (never stored in clear), or generate."""

    literal: str | None = None
    generate: bool = False
    regenerate: bool = False
    length: int = authstrings.DEFAULT_LENGTH

    def validated(self, prefix: str = "") -> "AuthRequest":
        if self.literal is not None and (self.generate or self.regenerate):
            raise ValidationError(prefix + "authentication_string",
                                  "cannot be combined with generate_authentication_string", show_value=False)
        if self.literal is not None:
            authstrings.check_auth_string(self.literal, prefix + "authentication_string")
        check_int_range(prefix + "authentication_string_length", self.length, AUTH_STRING_DIGITS, " digits")
        return self


def new_phone_row(name: str, defaults: dict) -> dict[str, Any]:
    """What a phone that does not exist yet looks like: the store defaults and service key defaults."""
    return {
        "id": None, "name": name, "description": "", "model": "", "device_pool": "", "security_mode": "non_secure",
        "operation": "none", "auth_mode": "null_string", "auth_salt": None, "auth_hash": None, "auth_failures": 0,
        "locked": 0, "key_order": defaults["key_order"], "rsa_key_size": defaults["rsa_key_size"],
        "ec_key_size": defaults["ec_key_size"], "operation_deadline": None, "operation_status": "none",
        "operation_reason": "",
    }


@dataclass
class PhonePlan:
    name: str
    exists: bool
    changes: dict             # column -> new value (auth columns included)
    generated: str | None     # a new authentication string (TO_BE_GENERATED in check mode)
    auth_view: str            # "(unset)", "(set)", "(new)", "(changed)"
    current: dict | None      # the phone's row before the change (None for a new phone)
    after_row: dict           # the phone's row after it
    # Why the change withdraws the phone's operation under way ("": it does not): a new operation, or
    # the finished one armed again (``reissue``). Its CSRs still at a CA are failed with this reason.
    withdraws: str = ""
    keys_changed: bool = False  # key_order, rsa_key_size or ec_key_size changed
    clock_skew: Any = phone_records.NO_CLOCK_SKEW  # the store's (``Store.clock_skew``), for the views
    # The stored operation status differs from the one the change was planned on (``as_reported``): the
    # write records it, and first fails the CSRs the views report failed (``csr_records.fail_as_read``).
    settles: bool = False
    now: str | None = None  # the moment the change was planned at (``before`` and ``after`` report it)

    @property
    def changed(self) -> bool:
        return bool(self.changes) or not self.exists

    @property
    def recorded_changes(self) -> dict:
        """The columns the write changes in the stored row: ``changes``, and the operation's status and
        reason as reported when the stored ones differ (``settles``)."""
        if not self.settles:
            return self.changes
        return {column: self.after_row[column] for column in WRITE_COLUMNS
                if self.after_row[column] != self.current[column]}

    # The reviewer's views are built on demand: a bulk job over 40,000 unchanged phones needs none.
    @property
    def before(self) -> dict | None:
        return settings_view(self.current, now=self.now, clock_skew=self.clock_skew) if self.current is not None else None

    @property
    def after(self) -> dict:
        return settings_view(self.after_row, self.auth_view, now=self.now, clock_skew=self.clock_skew)


def settings_view(row: dict, auth_view: str | None = None, *, now=None,
                  clock_skew=phone_records.NO_CLOCK_SKEW) -> dict[str, Any]:
    """The reviewer's view of a phone's settings (no hashes, option names as keys); the operation's
    status as views report it at ``now`` (default: the current time) on a store whose clock skew is
    ``clock_skew`` (lapsed once its deadline has passed, failed once the session that left it in
    progress surely ended: ``phone_records.reported_operation``)."""
    view = {"name": row["name"]}
    for option, column in OPTION_COLUMNS.items():
        view[option] = row[column]
    view["operation_status"] = phone_records.reported_operation(
        row, format_utc(parse_utc(now, "now") or utc_now()), clock_skew)[0]
    view["authentication_string"] = auth_view or ("(set)" if row.get("auth_hash") else "(unset)")
    return view


def as_reported(row: dict, now: str, clock_skew=phone_records.NO_CLOCK_SKEW) -> dict:
    """The phone row ``row`` with its operation's status and reason as the views report them at ``now``
    (``phone_records.reported_operation``): what a converge decides on, as the operator sees it."""
    status, reason = phone_records.reported_operation(row, now, clock_skew)
    if (status, reason) == (row["operation_status"], row["operation_reason"]):
        return row
    return dict(row, operation_status=status, operation_reason=reason)


def plan_phone(current: dict | None, name: str, wanted: dict, defaults: dict, auth: AuthRequest, secret: bytes,
               *, reissue: bool = False, check_mode: bool = False, prefix: str = "", now: str | None = None,
               clock_skew=phone_records.NO_CLOCK_SKEW) -> PhonePlan:
    """Compute one phone's changes. ``wanted`` holds validated columns (see ``check_settings``). The
    rules apply to the operation as the views report it at ``now`` (default: this second) on a store
    whose clock skew is ``clock_skew`` (``as_reported``): an operation reported ``failed`` or ``lapsed``
    is armed again as a stored one is, and the change records that status (``converge_many`` records
    its CSRs' first, as the scheduler would: ``csr_records.fail_as_read``)."""
    now = now or format_utc(utc_now())
    if current is not None:
        base = as_reported(current, now, clock_skew)
    else:
        base = new_phone_row(name, defaults)
    target = {column: base[column] for column in WRITE_COLUMNS}
    target.update(wanted)
    operation_changed = target["operation"] != base["operation"]
    if target["auth_mode"] == "auth_string" and target["security_mode"] in SECURE_MODES \
            and target["operation"] != "none":
        raise ValidationError(
            prefix + "authentication_mode",
            "must not be auth_string for a phone in security_mode %s: such a phone does not register until it has "
            "an LSC and never contacts CAPF by itself; use null_string or existing_cert_mic/existing_cert_lsc, or "
            "install the LSC while the phone is non_secure" % target["security_mode"],
            "auth_string",
        )

    auth_view = "(set)" if base["auth_hash"] else "(unset)"
    generated = None
    if target["auth_mode"] == "auth_string":
        if auth.literal is not None:
            if not authstrings.matches(secret, base["auth_salt"], base["auth_hash"], auth.literal):
                target["auth_salt"], target["auth_hash"] = authstrings.protect(secret, auth.literal)
                auth_view = "(changed)" if base["auth_hash"] else "(new)"
        elif auth.generate:
            needed = (not base["auth_hash"] or auth.regenerate or operation_changed
                      or base["auth_mode"] != "auth_string")
            if needed:
                auth_view = "(changed)" if base["auth_hash"] else "(new)"
                if check_mode:
                    generated = TO_BE_GENERATED
                    target["auth_hash"] = TO_BE_GENERATED.encode("ascii")
                else:
                    generated = authstrings.generate(auth.length)
                    target["auth_salt"], target["auth_hash"] = authstrings.protect(secret, generated)
        elif not base["auth_hash"]:
            raise ValidationError(prefix + "authentication_string",
                                  "is required when authentication_mode is auth_string (give the 4\u201310 digits, "
                                  "or set generate_authentication_string)")
        if target["auth_hash"] != base["auth_hash"]:
            target["auth_failures"], target["locked"] = 0, 0
    else:
        if auth.literal is not None or auth.generate:
            raise ValidationError(prefix + "authentication_string",
                                  "is only used with authentication_mode auth_string", show_value=False)
        if base["auth_hash"]:
            target["auth_salt"], target["auth_hash"] = None, None
            auth_view = "(unset)"

    finished = base["operation_status"] in ("succeeded", "failed", "lapsed", "none")
    # A new deadline, or none any more (``operation_completes_by: none``), arms a failed or lapsed
    # operation again: the deadline it failed or lapsed by no longer holds.
    deadline_changed = target["operation_deadline"] != base["operation_deadline"]
    reissued = target["operation"] != "none" and reissue and finished
    rearm = target["operation"] != "none" and (
        operation_changed or reissued
        or (deadline_changed and base["operation_status"] in ("failed", "lapsed", "none")))
    if rearm and not operation_changed and current is not None and phone_records.reported_operation(
            {**base, **target, "operation_status": "pending", "operation_reason": ""}, now, clock_skew) == (
            base["operation_status"], base["operation_reason"]):
        # Armed again with its deadline passed, it would lapse at once: it stays as the views report it.
        reissued = rearm = False
    if target["operation"] == "none":
        target["operation_status"] = "none" if operation_changed else base["operation_status"]
    elif rearm:
        target["operation_status"] = "pending"
    if target["operation_status"] != base["operation_status"]:
        target["operation_reason"] = ""

    changes = {column: value for column, value in target.items() if value != base[column]}
    after_row = dict(base)
    after_row.update(target)
    withdraws = ""
    if current is not None and operation_changed:
        withdraws = f"the operator changed the phone's operation from {base['operation']} to {target['operation']}"
    elif current is not None and reissued:
        withdraws = f"the operator armed the {target['operation']} operation again (reissue)"
    return PhonePlan(name, current is not None, changes, generated, auth_view, current, after_row, withdraws,
                     any(column in changes for column in KEY_COLUMNS), clock_skew,
                     current is not None and base["operation_status"] != current["operation_status"], now)


@dataclass(frozen=True, slots=True)
class PhoneRequest:
    """One phone's requested change: validated columns (see ``check_settings``), how to treat its
    authentication string, and how errors name its fields (``phones[3].``, ``phone SEP...: ``)."""

    name: str
    settings: dict
    auth: AuthRequest = AuthRequest()
    prefix: str = ""
    reissue: bool = False  # arm the operation again when it has finished (with ``converge_many``'s own)


def audit_event(plan: PhonePlan, via: str) -> tuple[str, str, dict[str, Any]]:
    """The one audit event of a phone change, whoever asks: ``phone.create`` or ``phone.update``, the
    changed settings by option name (a new phone's: those that differ from its defaults), the state
    the change resets, ``auth_change`` instead of the keyed hash, and ``via``, the path that asked."""
    details = {COLUMN_OPTIONS.get(column, column): value for column, value in plan.recorded_changes.items()
               if column not in AUDIT_HIDDEN}
    if "auth_hash" in plan.changes:
        details["auth_change"] = plan.auth_view
    details["via"] = via
    return ("phone.update" if plan.exists else "phone.create", plan.name, details)


def _write_plans(tx, actor: str, plans: list[PhonePlan], via: str) -> None:
    """Write the changed phones of ``plans`` in the caller's transaction: one statement for the
    updates, one for the inserts, one for their audit events, all at one time."""
    changed = [plan for plan in plans if plan.changed]
    if not changed:
        return
    events = [audit_event(plan, via) for plan in changed]
    now = format_utc(utc_now())
    updates = [[plan.after_row[column] for column in WRITE_COLUMNS] + [now, plan.current["id"]]
               for plan in changed if plan.exists]
    if updates:
        phone_records.update_many(tx, WRITE_COLUMNS, updates)
    faults.checkpoint("bulk.updated")
    inserts = [[plan.name, now, now] + [plan.after_row[column] for column in WRITE_COLUMNS]
               for plan in changed if not plan.exists]
    if inserts:
        phone_records.insert_many(tx, WRITE_COLUMNS, inserts)
    audit.record_many(tx, actor, now, events)


def converge_many(tx, actor: str, secret: bytes, work, *, via: str, reissue: bool = False,
                  check_mode: bool = False, progress=None, refused: list | None = None,
                  clock_skew=phone_records.NO_CLOCK_SKEW, now=None) -> list[PhonePlan]:
    """The one converge path of phone settings: plan every ``(current row or None, PhoneRequest)``
    of ``work`` with the same rules, then (unless in check mode) write the changed phones with one
    audit shape. Every module, bulk job, CSV import and declarative file changes phones here.
    ``progress("phones", done, total)``, when given, is told how far the planning is. A request that
    breaks a rule raises its ``ValidationError`` (nothing is written); with a ``refused`` list it is
    left out instead, appended there as ``(request, error)``, and the others are written. The plans'
    ``before`` and ``after`` report the operation's status as views do on a store whose clock skew is
    ``clock_skew`` (``Store.clock_skew``), and the rules apply to that status at ``now`` (default: this
    second): a phone the change writes first gets what the scheduler would record of it then
    (``csr_records.fail_as_read``), so that its CSRs end as they would after the scheduler's round."""
    via = check_choice("via", via, VIA)
    moment = format_utc(parse_utc(now, "now") or utc_now())
    defaults = service_records.read(tx)
    plans, total = [], len(work)
    for done, (current, request) in enumerate(work, 1):
        try:
            plans.append(plan_phone(current, request.name, request.settings, defaults, request.auth, secret,
                                    reissue=reissue or request.reissue, check_mode=check_mode, prefix=request.prefix,
                                    now=moment, clock_skew=clock_skew))
        except ValidationError as exc:
            if refused is None:
                raise
            refused.append((request, exc))
        if progress is not None:
            progress("phones", done, total)
    if not check_mode:
        for plan in plans:
            if plan.changed and plan.settles:
                csr_records.fail_as_read(tx, actor, plan.current, moment, clock_skew, via=via)
        _write_plans(tx, actor, plans, via)
        _withdraw_requests(tx, actor, plans, via)
    return plans


def _request_withdrawn(plan: PhonePlan, public_key: bytes) -> str:
    """Why the change of ``plan`` fails the phone's CSR for ``public_key`` still at a CA ("": it keeps
    waiting): the operation it was made for is withdrawn, or the phone's key settings no longer ask
    for its key (an LSC for it would carry a key the operator no longer wants)."""
    if plan.withdraws:
        return plan.withdraws
    if plan.keys_changed:
        kind, size = c.key_description(c.load_public_key(public_key, "stored CSR key"))
        if not key_allowed(plan.after_row, kind, size):
            return (f"the operator changed the phone's key settings: its {kind.upper()}-{size} key is no longer one "
                    "they ask for")
    return ""


def _withdraw_requests(tx, actor: str, plans: list[PhonePlan], via: str) -> None:
    """Fail the CSRs still at a CA (``pending``) that the changes of ``plans`` withdraw, each with its
    reason and a ``csr.failed`` audit event: a CA's answer for one is then stale, never delivered
    (``enrolment``), and the offline export no longer lists it."""
    concerned = {plan.current["id"]: plan for plan in plans if plan.exists and (plan.withdraws or plan.keys_changed)}
    if not concerned:
        return
    for row in csr_records.pending_of_phones(tx, concerned):
        plan = concerned[row["phone_id"]]
        reason = _request_withdrawn(plan, row["public_key"])
        if reason:
            csr_records.fail_pending(tx, actor, plan.name, row["id"], reason, via=via)


def remove(tx, actor: str, name: str, *, via: str) -> bool:
    """Remove the phone ``name`` (``store.phones.delete``: its LSCs revoked, its certificates and CSRs
    gone with it); its CSRs still at a CA are failed first, each with a ``csr.failed`` audit event,
    so the log says what became of the requests a CA may still answer. Whether it existed."""
    via = check_choice("via", via, VIA)
    phone = phone_records.get(tx, name)
    if phone is None:
        return False
    csr_records.withdraw_pending(tx, actor, {phone["id"]: phone["name"]}, "the operator removed the phone from the store",
                                 via=via)
    return phone_records.delete(tx, actor, name, via=via)


def converge(store: Store, name: str, *, state: str = "present", settings: dict | None = None,
             auth: AuthRequest | None = None, reissue: bool = False, revoke: dict | None = None,
             check_mode: bool = False) -> dict[str, Any]:
    """Converge one phone; returns changed/before/after, the phone's CAPF status, and a generated
    authentication string once (only when one was generated in this call). ``revoke``
    (``{"reason": ..., "serial": ...}``) also revokes the phone's LSC(s) (``revocation.revoke_in``),
    in the same transaction; before/after then show them under ``lscs``."""
    name = normalise_device_name(name, "name")
    state = check_choice("state", state, ("present", "absent"))
    auth = (auth or AuthRequest()).validated()
    wanted = check_settings(settings)
    if revoke is not None and state == "absent":
        raise ValidationError("revoke", "only applies with state=present (state=absent removes the phone's LSCs)")
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        current = phone_records.get(tx, name)
        if state == "absent":
            before = settings_view(current, clock_skew=store.clock_skew) if current else None
            # The removal revokes the LSCs the phone still holds (``phone_records.delete``).
            revoked = ([row["serial"] for row in revocation.plan_revocation(tx, name)] if current is not None
                       else [])
            if current is not None and not check_mode:
                remove(tx, store.actor, name, via="capf_phone")
            return converged(current is not None, before, None, name=name, status=None, revoked=revoked)
        # Read before anything is written, in either mode: the status returned is the planned row's.
        stored = phone_status(tx, name, clock_skew=store.clock_skew) if current is not None else None
        plan, = converge_many(tx, store.actor, secret, [(current, PhoneRequest(name, wanted, auth))],
                              via="capf_phone", reissue=reissue, check_mode=check_mode, clock_skew=store.clock_skew)
        revoked = None
        if revoke is not None:
            revoke = revocation.check_request(revoke)
            # A phone created now holds no LSC yet, whichever the mode.
            revoked = (revocation.revoke_in(tx, store.actor, name, revoke["reason"], serial=revoke.get("serial"),
                                            check_mode=check_mode)
                       if current is not None else revocation.nothing_to_revoke(name, revoke.get("serial")))
    lsc = stored["lsc"] if stored is not None else None
    if lsc is not None and revoked is not None and lsc["serial"] in revoked["revoked"]:
        lsc = dict(lsc, status="revoked")
    status = status_view(plan.after_row, lsc, stored["last_session"] if stored is not None else None,
                         clock_skew=store.clock_skew)
    extras: dict[str, Any] = {"name": name, "status": status}
    if plan.generated is not None:
        extras["authentication_string"] = plan.generated
    if revoked is None:
        return converged(plan.changed, plan.before, plan.after, **extras)
    extras["revoked"] = revoked["revoked"] if revoked["changed"] else []
    if revoked.get("warnings"):
        extras["warnings"] = revoked["warnings"]
    return converged(plan.changed or revoked["changed"], dict(plan.before or {}, lscs=revoked["before"]["lscs"]),
                     dict(plan.after, lscs=revoked["after"]["lscs"]), **extras)
